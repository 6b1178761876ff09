-- The risk model's inputs and outcomes: each payment's history (the payer's, the payee's and
-- the payment method's, before it), everything the risk engine sent with a decision, and
-- disputes. What each history value means is `paysys_core::History`; why it is exact and
-- costs the same whatever a party's history, `store::history`.

-- "Since first seen" counts. velocity_payers rows are removed while a payer is idle, so these
-- have tables of their own, kept for good: one row per payer, payer and currency, payer and
-- payee, payer and payment method, payment method, and payee.
CREATE TABLE payer_history (
    user_id  uuid        PRIMARY KEY,
    payments bigint      NOT NULL,
    -- Creation time of the payer's first payment.
    first_at timestamptz NOT NULL
);

CREATE TABLE payer_currency_history (
    user_id  uuid    NOT NULL,
    currency char(3) NOT NULL,
    payments bigint  NOT NULL,
    -- Their total in minor units.
    total    bigint  NOT NULL,
    PRIMARY KEY (user_id, currency)
);

-- Pairs that occurred: "is this payee (method) new for this payer" is one probe.
CREATE TABLE payer_payees (
    user_id  uuid NOT NULL,
    payee_id uuid NOT NULL,
    PRIMARY KEY (user_id, payee_id)
);

CREATE TABLE payer_methods (
    user_id           uuid NOT NULL,
    payment_method_id uuid NOT NULL,
    PRIMARY KEY (user_id, payment_method_id)
);

-- One row per payment method (any payer): its row lock serializes the groups that use it.
CREATE TABLE method_history (
    payment_method_id uuid   PRIMARY KEY,
    payments          bigint NOT NULL
);

-- One row per payee (any payer): the payee's running count, and its row lock serializes the
-- groups that pay it, like velocity_payers for payers. Each payment stores the payee's count
-- before it (`payments.payee_seq`), so the payee's payments inside the velocity window before
-- a new one are its count minus the count before its first payment inside the window.
CREATE TABLE payee_history (
    payee_id uuid        PRIMARY KEY,
    payments bigint      NOT NULL,
    -- Creation time of the payee's latest payment: new payments are never created earlier.
    last_at  timestamptz NOT NULL
);

ALTER TABLE payments
    ADD COLUMN payee_seq bigint NOT NULL DEFAULT 0,
    -- The history sent to the risk engine (`paysys_core::History`, field by field); NULL for
    -- payments accepted before this migration, which are sent without one.
    ADD COLUMN history_payer_payment_count        bigint,
    ADD COLUMN history_payer_first_payment_at     timestamptz,
    ADD COLUMN history_payer_currency_count       bigint,
    ADD COLUMN history_payer_currency_total_minor bigint,
    ADD COLUMN history_new_payee                  boolean,
    ADD COLUMN history_new_payment_method         boolean,
    ADD COLUMN history_method_payment_count       bigint,
    ADD COLUMN history_payee_window_count         bigint,
    -- The feature values the decision was made on (`paysys_core::FeatureLog`), kept here
    -- rather than in `decision` (which holds the rest of the decision message): a float8[]
    -- is exact, compact, and what the data feed exports.
    ADD COLUMN decision_features_version text,
    ADD COLUMN decision_features         float8[],
    -- The dispute (at most one per payment): an outcome label, not a status.
    ADD COLUMN dispute_reason text CHECK (dispute_reason IN
        ('fraudulent', 'product_not_received', 'duplicate', 'unrecognized', 'other')),
    ADD COLUMN dispute_note   text,
    ADD COLUMN disputed_at    timestamptz;

-- Build the history of existing payments, in creation order.
UPDATE payments p
SET payee_seq = r.seq
FROM (
    SELECT id, row_number() OVER (PARTITION BY payee_id ORDER BY created_at, id) - 1 AS seq
    FROM payments
) r
WHERE p.id = r.id;

INSERT INTO payer_history (user_id, payments, first_at)
SELECT user_id, count(*), min(created_at) FROM payments GROUP BY user_id;

INSERT INTO payer_currency_history (user_id, currency, payments, total)
SELECT user_id, currency, count(*), sum(amount_minor)::bigint FROM payments
GROUP BY user_id, currency;

INSERT INTO payer_payees (user_id, payee_id)
SELECT DISTINCT user_id, payee_id FROM payments;

INSERT INTO payer_methods (user_id, payment_method_id)
SELECT DISTINCT user_id, payment_method_id FROM payments;

INSERT INTO method_history (payment_method_id, payments)
SELECT payment_method_id, count(*) FROM payments GROUP BY payment_method_id;

INSERT INTO payee_history (payee_id, payments, last_at)
SELECT payee_id, count(*), max(created_at) FROM payments GROUP BY payee_id;

-- The first payment to a payee after a time: one probe, whatever the payee's history.
CREATE INDEX payments_payee_window ON payments (payee_id, created_at, payee_seq);

-- 0005's function, computing each payment's history as well. Locks are taken in one global
-- order (payers, then payees, then payment methods, each sorted by id), so groups sharing
-- any of them never deadlock; the main statement starts after all of them were granted and
-- sees every earlier payment of these payers, payees and methods. One creation time per
-- group, never below any of its payers' or payees' last one: monotone per payer and per
-- payee, so "inside the window" is a suffix of either's payments. Every lookup is a probe by
-- key, as in 0005.
CREATE OR REPLACE FUNCTION paysys_insert_payments(uuid[], text[], bigint[], text[], uuid[], uuid[],
                                       uuid[], integer)
RETURNS TABLE (group_position bigint, created timestamptz)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
AS $function$
BEGIN
    INSERT INTO velocity_payers AS v (user_id, payments, since, last_at)
    SELECT user_id, 0, clock_timestamp(), '-infinity'
    FROM (SELECT DISTINCT user_id FROM unnest($5) AS t(user_id)) AS u
    ORDER BY user_id
    ON CONFLICT (user_id) DO UPDATE SET payments = v.payments;

    INSERT INTO payee_history AS h (payee_id, payments, last_at)
    SELECT payee_id, 0, '-infinity'
    FROM (SELECT DISTINCT payee_id FROM unnest($6) AS t(payee_id)) AS u
    ORDER BY payee_id
    ON CONFLICT (payee_id) DO UPDATE SET payments = h.payments;

    INSERT INTO method_history AS h (payment_method_id, payments)
    SELECT payment_method_id, 0
    FROM (SELECT DISTINCT payment_method_id FROM unnest($7) AS t(payment_method_id)) AS u
    ORDER BY payment_method_id
    ON CONFLICT (payment_method_id) DO UPDATE SET payments = h.payments;

    RETURN QUERY
    -- Currencies as char(3), the column's type, so that the lookups below use the indexes.
    WITH input AS (
        SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::char(3)[], $5::uuid[],
                             $6::uuid[], $7::uuid[])
            WITH ORDINALITY AS t(id, principal, amount_minor, currency, user_id, payee_id,
                                 payment_method_id, ord)
    ), clock AS MATERIALIZED (
        -- After every lock was granted: creation times follow the lock order.
        SELECT clock_timestamp() AS now
    ), payer_row AS (
        SELECT v.user_id, v.payments, v.since, v.last_at, h.payments AS ever, h.first_at
        FROM (SELECT DISTINCT user_id FROM input) AS u
        CROSS JOIN LATERAL (
            SELECT * FROM velocity_payers v WHERE v.user_id = u.user_id OFFSET 0
        ) AS v
        LEFT JOIN LATERAL (
            SELECT h.payments, h.first_at FROM payer_history h WHERE h.user_id = u.user_id
            OFFSET 0
        ) AS h ON true
    ), payee AS (
        SELECT h.payee_id, h.payments, h.last_at
        FROM (SELECT DISTINCT payee_id FROM input) AS u
        CROSS JOIN LATERAL (
            SELECT * FROM payee_history h WHERE h.payee_id = u.payee_id OFFSET 0
        ) AS h
    ), group_clock AS MATERIALIZED (
        SELECT greatest(clock.now, (SELECT max(last_at) FROM payer_row),
                        (SELECT max(last_at) FROM payee)) AS at
        FROM clock
    ), payer AS (
        SELECT r.user_id, r.payments, r.since, g.at, coalesce(r.ever, 0) AS ever, r.first_at
        FROM payer_row r CROSS JOIN group_clock g
    ), seq_before_window AS MATERIALIZED (
        -- The payer's running count before its first payment inside the window (any
        -- currency: the earliest of each currency's first), or before this group.
        SELECT p.user_id, coalesce(min(f.velocity_seq), p.payments) AS seq
        FROM payer p
        LEFT JOIN LATERAL (
            SELECT t.user_id, t.currency FROM velocity_totals t WHERE t.user_id = p.user_id
            OFFSET 0
        ) AS t ON true
        LEFT JOIN LATERAL (
            SELECT q.velocity_seq FROM payments q
            WHERE q.user_id = t.user_id AND q.currency = t.currency
              AND q.created_at > p.at - make_interval(secs => $8)
              AND q.created_at >= p.since
            ORDER BY q.created_at, q.velocity_seq LIMIT 1
        ) f ON true
        GROUP BY p.user_id, p.payments
    ), payer_currency AS MATERIALIZED (
        -- One velocity lookup per payer and currency, however many payments of theirs.
        SELECT DISTINCT user_id, currency FROM input
    ), total_before_window AS MATERIALIZED (
        -- The same for the total in each currency of this group, with the payer's history
        -- in that currency.
        SELECT c.user_id, c.currency, coalesce(t.total, 0) AS total,
               coalesce(f.velocity_running_total, t.total, 0) AS before_window,
               coalesce(h.payments, 0) AS ever, coalesce(h.total, 0) AS ever_total
        FROM payer_currency c
        JOIN payer p USING (user_id)
        LEFT JOIN LATERAL (
            SELECT t.total FROM velocity_totals t
            WHERE t.user_id = c.user_id AND t.currency = c.currency
            OFFSET 0
        ) AS t ON true
        LEFT JOIN LATERAL (
            SELECT q.velocity_running_total FROM payments q
            WHERE q.user_id = c.user_id AND q.currency = c.currency
              AND q.created_at > p.at - make_interval(secs => $8)
              AND q.created_at >= p.since
            ORDER BY q.created_at, q.velocity_seq LIMIT 1
        ) f ON true
        LEFT JOIN LATERAL (
            SELECT h.payments, h.total FROM payer_currency_history h
            WHERE h.user_id = c.user_id AND h.currency = c.currency
            OFFSET 0
        ) AS h ON true
    ), payee_before_window AS MATERIALIZED (
        -- The payee's running count before its first payment inside the window (any
        -- payer), or before this group.
        SELECT e.payee_id, e.payments, coalesce(f.payee_seq, e.payments) AS seq
        FROM payee e
        CROSS JOIN group_clock g
        LEFT JOIN LATERAL (
            SELECT q.payee_seq FROM payments q
            WHERE q.payee_id = e.payee_id
              AND q.created_at > g.at - make_interval(secs => $8)
            ORDER BY q.created_at, q.payee_seq LIMIT 1
        ) f ON true
    ), pair AS MATERIALIZED (
        -- Whether the payer paid this payee, and used this method, before this group.
        SELECT u.user_id, u.payee_id, u.payment_method_id,
               k.user_id IS NOT NULL AS payee_known, m.user_id IS NOT NULL AS method_known
        FROM (SELECT DISTINCT user_id, payee_id, payment_method_id FROM input) AS u
        LEFT JOIN LATERAL (
            SELECT k.user_id FROM payer_payees k
            WHERE k.user_id = u.user_id AND k.payee_id = u.payee_id OFFSET 0
        ) AS k ON true
        LEFT JOIN LATERAL (
            SELECT m.user_id FROM payer_methods m
            WHERE m.user_id = u.user_id AND m.payment_method_id = u.payment_method_id OFFSET 0
        ) AS m ON true
    ), method AS MATERIALIZED (
        SELECT h.payment_method_id, h.payments
        FROM (SELECT DISTINCT payment_method_id FROM input) AS u
        CROSS JOIN LATERAL (
            SELECT * FROM method_history h WHERE h.payment_method_id = u.payment_method_id
            OFFSET 0
        ) AS h
    ), ranked AS (
        -- The lookups above are MATERIALIZED: a reused plan joins them to the input by nested
        -- loops, and an inlined lookup would be run again, probes and all, for every payment
        -- of the group (a group of 128 took 320 ms instead of 60).
        -- Each payment's running values: the stored ones plus the group's earlier payments
        -- (window frames end one row before the payment itself).
        SELECT i.*, p.at, s.seq AS seq_before_window, t.before_window AS total_before_window,
               p.payments + count(*) OVER payer_before AS seq,
               t.total + coalesce(sum(i.amount_minor) OVER payer_currency_before, 0)
                   AS running_total,
               p.ever + count(*) OVER payer_before AS payer_payment_count,
               coalesce(p.first_at,
                        CASE WHEN count(*) OVER payer_before > 0 THEN p.at END)
                   AS payer_first_payment_at,
               t.ever + count(*) OVER payer_currency_before AS payer_currency_count,
               t.ever_total + coalesce(sum(i.amount_minor) OVER payer_currency_before, 0)
                   AS payer_currency_total,
               NOT k.payee_known AND count(*) OVER payer_payee_before = 0 AS new_payee,
               NOT k.method_known AND count(*) OVER payer_method_before = 0
                   AS new_payment_method,
               m.payments + count(*) OVER method_before AS method_payment_count,
               e.payments + count(*) OVER payee_before AS payee_seq,
               e.seq AS payee_seq_before_window
        FROM input i
        JOIN payer p USING (user_id)
        JOIN seq_before_window s USING (user_id)
        JOIN total_before_window t USING (user_id, currency)
        JOIN payee_before_window e USING (payee_id)
        JOIN pair k USING (user_id, payee_id, payment_method_id)
        JOIN method m USING (payment_method_id)
        WINDOW payer_before AS (PARTITION BY i.user_id ORDER BY i.ord
                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
               payer_currency_before AS (PARTITION BY i.user_id, i.currency ORDER BY i.ord
                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
               payer_payee_before AS (PARTITION BY i.user_id, i.payee_id ORDER BY i.ord
                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
               payer_method_before AS (PARTITION BY i.user_id, i.payment_method_id
                                ORDER BY i.ord
                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
               method_before AS (PARTITION BY i.payment_method_id ORDER BY i.ord
                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
               payee_before AS (PARTITION BY i.payee_id ORDER BY i.ord
                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
    ), payment AS (
        INSERT INTO payments (id, principal, amount_minor, currency, user_id, payee_id,
            payment_method_id, status, velocity_window_seconds, velocity_count,
            velocity_total_minor, velocity_seq, velocity_running_total, payee_seq,
            history_payer_payment_count, history_payer_first_payment_at,
            history_payer_currency_count, history_payer_currency_total_minor,
            history_new_payee, history_new_payment_method, history_method_payment_count,
            history_payee_window_count, created_at, updated_at)
        SELECT id, principal, amount_minor, currency, user_id, payee_id, payment_method_id,
               'pending', $8, seq - seq_before_window,
               (running_total - total_before_window)::bigint, seq, running_total::bigint,
               payee_seq, payer_payment_count, payer_first_payment_at, payer_currency_count,
               payer_currency_total::bigint, new_payee, new_payment_method,
               method_payment_count, payee_seq - payee_seq_before_window, at, at
        FROM ranked
        ORDER BY ord
        RETURNING id, created_at
    ), event AS (
        INSERT INTO payment_events (payment_id, from_status, to_status, cause)
        SELECT id, NULL, 'pending', 'created' FROM payment
    ), queued AS (
        INSERT INTO outbox (payment_id)
        SELECT i.id FROM input i JOIN payment USING (id) ORDER BY i.ord
    ), payer_counted AS (
        UPDATE velocity_payers v SET payments = v.payments + g.n, last_at = g.at
        FROM (SELECT user_id, count(*) AS n, max(at) AS at FROM ranked GROUP BY user_id) g
        WHERE v.user_id = g.user_id AND v.user_id = ANY ($5)
    ), total_counted AS (
        INSERT INTO velocity_totals (user_id, currency, total)
        SELECT user_id, currency, sum(amount_minor)::bigint FROM input
        GROUP BY user_id, currency
        ORDER BY user_id, currency
        ON CONFLICT (user_id, currency)
            DO UPDATE SET total = velocity_totals.total + excluded.total
    ), payer_history_counted AS (
        INSERT INTO payer_history (user_id, payments, first_at)
        SELECT user_id, count(*), min(at) FROM ranked
        GROUP BY user_id
        ORDER BY user_id
        ON CONFLICT (user_id)
            DO UPDATE SET payments = payer_history.payments + excluded.payments
    ), currency_history_counted AS (
        INSERT INTO payer_currency_history (user_id, currency, payments, total)
        SELECT user_id, currency, count(*), sum(amount_minor)::bigint FROM input
        GROUP BY user_id, currency
        ORDER BY user_id, currency
        ON CONFLICT (user_id, currency)
            DO UPDATE SET payments = payer_currency_history.payments + excluded.payments,
                          total = payer_currency_history.total + excluded.total
    ), payees_seen AS (
        INSERT INTO payer_payees (user_id, payee_id)
        SELECT DISTINCT user_id, payee_id FROM input
        ORDER BY user_id, payee_id
        ON CONFLICT DO NOTHING
    ), methods_seen AS (
        INSERT INTO payer_methods (user_id, payment_method_id)
        SELECT DISTINCT user_id, payment_method_id FROM input
        ORDER BY user_id, payment_method_id
        ON CONFLICT DO NOTHING
    ), method_counted AS (
        UPDATE method_history h SET payments = h.payments + g.n
        FROM (SELECT payment_method_id, count(*) AS n FROM input GROUP BY payment_method_id) g
        WHERE h.payment_method_id = g.payment_method_id AND h.payment_method_id = ANY ($7)
    ), payee_counted AS (
        UPDATE payee_history h SET payments = h.payments + g.n, last_at = g.at
        FROM (SELECT payee_id, count(*) AS n, max(at) AS at FROM ranked GROUP BY payee_id) g
        WHERE h.payee_id = g.payee_id AND h.payee_id = ANY ($6)
    )
    SELECT i.ord, p.created_at FROM payment p JOIN input i USING (id) ORDER BY i.ord;
END
$function$;
