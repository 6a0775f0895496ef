-- Event search lists newest first: an index in that order reads a page, not
-- the table (a search without filters used to sort every event).
CREATE INDEX by_stored ON events (stored_at);
