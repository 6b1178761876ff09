-- The undecided backlog (payments still pending a risk decision) and its oldest payment, read
-- several times a second for the metrics and the admission bound (MAX_UNDECIDED): a partial
-- index keeps that read proportional to the backlog, not to the table.
CREATE INDEX payments_undecided ON payments (created_at) WHERE status = 'pending';
