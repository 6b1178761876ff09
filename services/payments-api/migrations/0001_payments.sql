-- Payments, their audit trail, the transactional outbox and idempotency keys.

CREATE TABLE payments (
    -- UUIDv7: time-ordered, so the primary key also orders payments for cursor pagination.
    id                       uuid PRIMARY KEY,
    principal                text        NOT NULL,
    amount_minor             bigint      NOT NULL CHECK (amount_minor > 0),
    currency                 char(3)     NOT NULL,
    user_id                  uuid        NOT NULL,
    payee_id                 uuid        NOT NULL,
    payment_method_id        uuid        NOT NULL,
    status                   text        NOT NULL CHECK (status IN ('pending', 'approved', 'declined', 'captured', 'canceled')),
    -- The payer's activity in the window before this payment, as sent to the risk engine.
    velocity_window_seconds  integer     NOT NULL,
    velocity_count           bigint      NOT NULL,
    velocity_total_minor     bigint      NOT NULL,
    -- The risk decision as received (outcome, score, reasons, rules version, time).
    decision                 jsonb,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);

-- Listing: a principal's payments newest first.
CREATE INDEX payments_principal_id ON payments (principal, id DESC);
-- Velocity: a user's recent payments; INCLUDE lets the sums come from the index alone.
CREATE INDEX payments_user_created ON payments (user_id, created_at) INCLUDE (amount_minor, currency);

-- Every status change with its time and cause.
CREATE TABLE payment_events (
    payment_id  uuid        NOT NULL REFERENCES payments (id),
    id          bigint GENERATED ALWAYS AS IDENTITY,
    from_status text,
    to_status   text        NOT NULL,
    cause       text        NOT NULL,
    detail      jsonb,
    at          timestamptz NOT NULL DEFAULT now(),
    -- One index serves both identity and "this payment's trail in order".
    PRIMARY KEY (payment_id, id)
);

-- Payments committed but not yet confirmed by RabbitMQ. A row is deleted only after the
-- broker acknowledged its message.
CREATE TABLE outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id  uuid        NOT NULL REFERENCES payments (id),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- First response to each (principal, Idempotency-Key), replayed for retries.
CREATE TABLE idempotency_keys (
    principal       text        NOT NULL,
    key             text        NOT NULL,
    request_hash    bytea       NOT NULL,
    response_status smallint    NOT NULL,
    response_body   bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
