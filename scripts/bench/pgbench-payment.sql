-- The yardstick for POST /payments: what PostgreSQL alone does when each transaction inserts
-- one payment and its outbox row (one statement, one commit), as pgbench clients, with a new
-- payer each time. Used by scripts/bench-report.sh: pgbench -n -M prepared -f this-file.
\set amount random(1, 100000)
WITH payment AS (
    INSERT INTO payments (id, principal, amount_minor, currency, user_id, payee_id,
        payment_method_id, status, velocity_window_seconds, velocity_count, velocity_total_minor)
    VALUES (gen_random_uuid(), 'pgbench', :amount, 'USD', gen_random_uuid(), gen_random_uuid(),
        gen_random_uuid(), 'pending', 3600, 0, 0)
    RETURNING id
)
INSERT INTO outbox (payment_id) SELECT id FROM payment;
