-- Incremental velocity: accepting a payment costs the same whatever the payer's history.
--
-- Each payer keeps running totals since its first payment (`velocity_payers.payments`,
-- `velocity_totals.total` per currency), and each payment stores the running totals just
-- before it (`payments.velocity_seq`, `payments.velocity_running_total`). The payer's activity
-- in the window before a new payment P is then exact and costs two index probes, whatever the
-- history: the running total before P minus the running total before the first payment inside
-- the window (`store::payments` explains why creation times are monotone per payer, which
-- makes "inside the window" a suffix of the payer's payments).

-- One row per payer seen in the window: its row lock serializes concurrent writers of the
-- same payer (groups of several API replicas), so running totals never skip or repeat.
CREATE TABLE velocity_payers (
    user_id   uuid        PRIMARY KEY,
    -- Payments since `since` (any currency).
    payments  bigint      NOT NULL,
    -- Creation time of the first payment counted here: payments older than this belong to a
    -- previous row of the same payer (removed while idle) and are never looked up.
    since     timestamptz NOT NULL,
    -- Creation time of the latest payment: new payments are never created earlier.
    last_at   timestamptz NOT NULL
);
-- Idle payers are removed by range (no scan of the table, none of payments).
CREATE INDEX velocity_payers_last_at ON velocity_payers (last_at);

-- Per payer and currency: total in minor units since the payer's `since`.
CREATE TABLE velocity_totals (
    user_id  uuid    NOT NULL REFERENCES velocity_payers (user_id) ON DELETE CASCADE,
    currency char(3) NOT NULL,
    total    bigint  NOT NULL,
    PRIMARY KEY (user_id, currency)
);

-- New columns only: existing ones keep their names and meaning (other readers use them).
ALTER TABLE payments
    ADD COLUMN velocity_seq           bigint NOT NULL DEFAULT 0,
    ADD COLUMN velocity_running_total bigint NOT NULL DEFAULT 0;

-- Build the aggregates for existing payments, in creation order per payer.
UPDATE payments p
SET velocity_seq = r.seq, velocity_running_total = r.running_total
FROM (
    SELECT id,
           row_number() OVER (PARTITION BY user_id ORDER BY created_at, id) - 1 AS seq,
           coalesce(sum(amount_minor) OVER (PARTITION BY user_id, currency ORDER BY created_at, id
                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)::bigint AS running_total
    FROM payments
) r
WHERE p.id = r.id;

INSERT INTO velocity_payers (user_id, payments, since, last_at)
SELECT user_id, count(*), min(created_at), max(created_at) FROM payments GROUP BY user_id;

INSERT INTO velocity_totals (user_id, currency, total)
SELECT user_id, currency, sum(amount_minor)::bigint FROM payments GROUP BY user_id, currency;

-- The first payment of a payer in a currency after a time: one probe, whatever the history.
CREATE INDEX payments_velocity ON payments (user_id, currency, created_at, velocity_seq)
    INCLUDE (velocity_running_total);
-- Replaced by payments_velocity (it served the scan of recent payments).
DROP INDEX payments_user_created;
