-- Retention (`webhooks::retention`): events and delivery attempts older than their windows are
-- deleted in batches.

-- Both tables are appended to in time order, so a block-range index finds the old rows while
-- costing next to nothing per insert (a B-tree would add an entry per row on the hot path).
CREATE INDEX events_created_at ON events USING brin (created_at);
CREATE INDEX webhook_attempts_attempted_at ON webhook_attempts USING brin (attempted_at);

-- "Is this event still owed to an endpoint" (retention keeps those), and the foreign key's
-- check when an event is deleted, which would otherwise scan webhook_deliveries for each one.
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);
