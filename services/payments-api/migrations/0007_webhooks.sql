-- Merchant webhooks: the events outbox (every change of a payment, written by triggers in the
-- transaction that makes it), the merchants' endpoints, what is still to deliver to them and
-- every delivery attempt. The dispatcher (`webhooks::dispatcher`) reads and writes these.

-- Events as the triggers write them. Their public ids are given later, in commit order, by the
-- sequencer (`store::events::sequence`): an id from a sequence taken here would follow the
-- order in which transactions *wrote*, not committed, and a reader of `GET /v1/events?after=`
-- could pass id 6 while id 5 was still uncommitted, and never see 5.
CREATE TABLE events_unsequenced (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The writing transaction: only rows of transactions older than every running one
    -- (pg_snapshot_xmin) are sequenced, so no row can still appear before them.
    txid       xid8        NOT NULL DEFAULT pg_current_xact_id(),
    type       text        NOT NULL,
    payment_id uuid        NOT NULL,
    principal  text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The payment row as it was (to_jsonb), rendered by the API with the view of
    -- GET /payments/{id}; columns added by later migrations come along unnamed here.
    payment    jsonb       NOT NULL
);
CREATE INDEX events_unsequenced_order ON events_unsequenced (txid, seq);

-- Events with their public ids: unique, increasing in commit order; `GET /v1/events` and the
-- receivers' deduplication key.
CREATE TABLE events (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type       text        NOT NULL,
    payment_id uuid        NOT NULL,
    principal  text        NOT NULL,
    created_at timestamptz NOT NULL,
    payment    jsonb       NOT NULL
);
CREATE INDEX events_principal_id ON events (principal, id);

-- A payment's state into an event: created on insert; on update, the new status when it
-- changed (a refund status as `payment.refunded`), a new dispute as `payment.disputed`, a
-- further refund (the refunded amount changed while refunded) as `payment.refunded`; any other
-- update (bookkeeping columns) is no event. Statement-level with transition tables: one
-- INSERT per statement, whatever the number of rows (payments are inserted and decided in
-- groups). The features vector is training data, not part of the payment's view.
CREATE FUNCTION paysys_payment_inserted_events() RETURNS trigger
LANGUAGE plpgsql AS $function$
BEGIN
    INSERT INTO events_unsequenced (type, payment_id, principal, payment)
    SELECT 'payment.created', n.id, n.principal, to_jsonb(n) - 'decision_features'
    FROM new_rows n
    ORDER BY n.id;
    RETURN NULL;
END
$function$;

CREATE FUNCTION paysys_payment_updated_events() RETURNS trigger
LANGUAGE plpgsql AS $function$
BEGIN
    INSERT INTO events_unsequenced (type, payment_id, principal, payment)
    SELECT e.type, e.id, e.principal, e.payment
    FROM (
        SELECT n.id, n.principal, to_jsonb(n) - 'decision_features' AS payment,
               CASE
                   WHEN n.status IS DISTINCT FROM o.status THEN
                       CASE WHEN n.status IN ('partially_refunded', 'refunded')
                            THEN 'payment.refunded' ELSE 'payment.' || n.status END
                   WHEN n.dispute_reason IS NOT NULL AND o.dispute_reason IS NULL
                       THEN 'payment.disputed'
                   WHEN n.status IN ('partially_refunded', 'refunded')
                        AND to_jsonb(n)->'refunded_minor' IS DISTINCT FROM to_jsonb(o)->'refunded_minor'
                       THEN 'payment.refunded'
               END AS type
        FROM new_rows n JOIN old_rows o ON o.id = n.id
    ) e
    WHERE e.type IS NOT NULL
    ORDER BY e.id;
    RETURN NULL;
END
$function$;

CREATE TRIGGER payments_inserted_events AFTER INSERT ON payments
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION paysys_payment_inserted_events();
CREATE TRIGGER payments_updated_events AFTER UPDATE ON payments
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION paysys_payment_updated_events();

-- A merchant's receiver. The signing secret is stored encrypted (AES-256-GCM under
-- WEBHOOK_SECRETS_KEY, bound to the endpoint's id): a dump of the database alone cannot sign.
CREATE TABLE webhook_endpoints (
    id               uuid        PRIMARY KEY,
    principal        text        NOT NULL,
    url              text        NOT NULL,
    event_types      text[]      NOT NULL,
    -- 12-byte nonce followed by the ciphertext and its tag.
    secret_encrypted bytea       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    secret_rotated_at timestamptz,
    -- Failed attempts since the last success; from a few on, the endpoint is paused (no
    -- delivery claimed) until `paused_until`, so a dead receiver costs one probe per pause
    -- instead of an attempt per event.
    consecutive_failures integer NOT NULL DEFAULT 0,
    paused_until     timestamptz,
    -- Set when a delivery was given up after the retry window; cleared by the next success.
    failing_since    timestamptz
);
CREATE INDEX webhook_endpoints_principal ON webhook_endpoints (principal, id);

-- What is still to deliver: one row per (event, subscribed endpoint), deleted once delivered
-- or given up. A row is claimed by pushing `next_attempt_at` past the attempt's longest
-- duration (a lease): a replica that dies mid-delivery leaves it to be claimed again.
CREATE TABLE webhook_deliveries (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id      uuid        NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id         bigint      NOT NULL REFERENCES events (id),
    payment_id       uuid        NOT NULL,
    event_created_at timestamptz NOT NULL,
    -- Claims so far; also the fence a claim's result is written under.
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now()
);
-- An endpoint's due deliveries, oldest due first.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_id, next_attempt_at);
-- "Is an earlier event of this payment still undelivered to this endpoint" (order per
-- endpoint and payment).
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (endpoint_id, payment_id, id);

-- Every attempt, for GET /v1/webhook-endpoints/{id}/attempts.
CREATE TABLE webhook_attempts (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id  uuid        NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id     bigint      NOT NULL,
    attempted_at timestamptz NOT NULL,
    -- NULL when no response came (refused, timed out, refused by the address check).
    http_status  smallint,
    latency_ms   integer     NOT NULL,
    error        text
);
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, id DESC);
