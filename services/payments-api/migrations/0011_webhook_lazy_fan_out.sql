-- Lazy fan-out: an event is no longer turned into one delivery row per subscribed endpoint when
-- it is sequenced. 100 events to 1,000 endpoints were 100,000 rows with their indexes, written
-- before the first could be claimed, 90,000 of them for endpoints that were dead (paused) and
-- could take none: the live endpoints waited behind them. Now the dispatcher makes each
-- endpoint's rows itself (`store::webhooks::fan_out`), a bounded batch at a time, only for
-- endpoints that are not paused and only as far ahead as their lanes can take.

-- The highest event id already turned into delivery rows for this endpoint: the events of its
-- principal above it, of the types it subscribes to, are still owed to it. Event ids increase
-- in the order readers can see them (`store::events::sequence`), so no event at or below the
-- cursor can become visible later: a cursor never passes over an event.
-- New endpoints start at the newest event id at registration: they receive the events
-- sequenced after it, as when the sequencer fanned out to the endpoints that existed then. A
-- function, as a default cannot hold a subquery; a default, so that every insert gets it.
CREATE FUNCTION paysys_newest_event_id() RETURNS bigint
LANGUAGE sql STABLE AS $function$
    SELECT coalesce(max(id), 0) FROM events
$function$;
-- Existing endpoints get the same: the old sequencer already fanned out every published event
-- to them.
ALTER TABLE webhook_endpoints
    ADD COLUMN fanned_out_through bigint NOT NULL DEFAULT paysys_newest_event_id();

-- One row per (endpoint, event) by construction: the fan-out locks the endpoint's row
-- (FOR NO KEY UPDATE SKIP LOCKED) and moves its cursor in the same statement, so replicas never
-- fan out the same events twice; this index makes it impossible however it happens, and lets a
-- replica of the previous version (which fans out when sequencing) run beside the new one
-- during an upgrade: the new fan-out skips what the old one already wrote (ON CONFLICT DO
-- NOTHING).
CREATE UNIQUE INDEX webhook_deliveries_endpoint_event ON webhook_deliveries (endpoint_id, event_id);
