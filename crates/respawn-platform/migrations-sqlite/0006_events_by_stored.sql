-- As ../migrations/0007_events_by_stored.sql.
CREATE INDEX IF NOT EXISTS events_by_stored ON events (stored_at);
