-- The same function as 0004, with every table read written as a probe by key.
--
-- Why: the statements of a connection are planned once and reused (generic plans), and a plan
-- made while a table is small (a new database, the first minutes of a deployment) joins it by
-- scanning it whole. Such plans stay until the statistics change, and scan tables that have
-- grown to thousands of rows for every group of payments: most of the database's time in the
-- end-to-end benchmark went there. Lookups are therefore lateral subqueries on the key
-- (`OFFSET 0` keeps the planner from turning them back into joins), which are index probes
-- whatever the planner believes about the tables' sizes; `payments_api::store` has a test that
-- no table is scanned. What the function computes, and why it is exact, is unchanged (0004).

CREATE OR REPLACE FUNCTION paysys_insert_payments(uuid[], text[], bigint[], text[], uuid[], uuid[],
                                       uuid[], integer)
RETURNS TABLE (group_position bigint, created timestamptz)
LANGUAGE plpgsql VOLATILE
-- The statements below are planned once per connection: their shapes do not depend on the
-- tables' statistics (see above), and planning the second one costs more than running it.
SET plan_cache_mode = force_generic_plan
AS $function$
BEGIN
    INSERT INTO velocity_payers AS v (user_id, payments, since, last_at)
    SELECT user_id, 0, clock_timestamp(), '-infinity'
    FROM (SELECT DISTINCT user_id FROM unnest($5) AS t(user_id)) AS u
    ORDER BY user_id
    ON CONFLICT (user_id) DO UPDATE SET payments = v.payments;

    RETURN QUERY
    -- Currencies as char(3), the column's type, so that the lookups below use the
    -- payments_velocity index on (user_id, currency, created_at).
    WITH input AS (
        SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::char(3)[], $5::uuid[],
                             $6::uuid[], $7::uuid[])
            WITH ORDINALITY AS t(id, principal, amount_minor, currency, user_id, payee_id,
                                 payment_method_id, ord)
    ), clock AS MATERIALIZED (
        -- After the payers' locks were granted: creation times follow the lock order.
        SELECT clock_timestamp() AS now
    ), payer AS (
        SELECT v.user_id, v.payments, v.since, greatest(clock.now, v.last_at) AS at
        FROM (SELECT DISTINCT user_id FROM input) AS u
        CROSS JOIN LATERAL (
            SELECT * FROM velocity_payers v WHERE v.user_id = u.user_id OFFSET 0
        ) AS v
        CROSS JOIN clock
    ), seq_before_window AS (
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
    ), total_before_window AS (
        -- The same for the total in each currency of this group.
        SELECT c.user_id, c.currency, coalesce(t.total, 0) AS total,
               coalesce(f.velocity_running_total, t.total, 0) AS before_window
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
    ), ranked AS (
        SELECT i.*, p.at, s.seq AS seq_before_window, t.before_window AS total_before_window,
               p.payments + count(*) OVER (PARTITION BY i.user_id ORDER BY i.ord
                              ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS seq,
               t.total + coalesce(sum(i.amount_minor) OVER (PARTITION BY i.user_id, i.currency
                              ORDER BY i.ord
                              ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
                   AS running_total
        FROM input i
        JOIN payer p USING (user_id)
        JOIN seq_before_window s USING (user_id)
        JOIN total_before_window t USING (user_id, currency)
    ), payment AS (
        INSERT INTO payments (id, principal, amount_minor, currency, user_id, payee_id,
            payment_method_id, status, velocity_window_seconds, velocity_count,
            velocity_total_minor, velocity_seq, velocity_running_total, created_at,
            updated_at)
        SELECT id, principal, amount_minor, currency, user_id, payee_id, payment_method_id,
               'pending', $8, seq - seq_before_window,
               (running_total - total_before_window)::bigint, seq, running_total::bigint,
               at, at
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
    )
    SELECT i.ord, p.created_at FROM payment p JOIN input i USING (id) ORDER BY i.ord;
END
$function$;
