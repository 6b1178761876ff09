-- Refunds: money given back from a captured payment, whole or in parts.
--
-- A payment's `refunded_minor` is the sum of its refunds, kept on the row so that the refund
-- that would exceed the captured amount is refused under the row's lock (and, should code
-- ever forget, by the CHECK below); its status says whether anything is left
-- (`partially_refunded`) or not (`refunded`). Each refund is a row of `refunds`, written in the
-- same transaction as the payment's update and its audit event.

ALTER TABLE payments
    DROP CONSTRAINT payments_status_check,
    ADD CONSTRAINT payments_status_check
        CHECK (status IN ('pending', 'approved', 'declined', 'captured', 'canceled',
                          'partially_refunded', 'refunded')),
    -- A constant default: PostgreSQL 11+ adds it without rewriting the table.
    ADD COLUMN refunded_minor bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT payments_refunded_within_amount
        CHECK (refunded_minor >= 0 AND refunded_minor <= amount_minor);

CREATE TABLE refunds (
    id           uuid        PRIMARY KEY,
    payment_id   uuid        NOT NULL REFERENCES payments (id),
    amount_minor bigint      NOT NULL CHECK (amount_minor > 0),
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- A payment's refunds, oldest first (`GET /payments/{id}`).
CREATE INDEX refunds_by_payment ON refunds (payment_id, created_at, id);
