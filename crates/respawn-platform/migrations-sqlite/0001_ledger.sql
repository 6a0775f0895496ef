-- The embedded ledger (SQLite): the same tables as the MySQL migrations in
-- ../migrations, in SQLite's types. 64-bit unsigned values are stored as
-- their signed bit patterns.
CREATE TABLE IF NOT EXISTS events (
  zone INTEGER NOT NULL,
  epoch INTEGER NOT NULL,
  tick INTEGER NOT NULL,
  idx INTEGER NOT NULL,
  player INTEGER NOT NULL,
  kind TEXT NOT NULL,
  payload BLOB NOT NULL,
  batch_id INTEGER NOT NULL,
  stored_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  PRIMARY KEY (zone, epoch, tick, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_by_player ON events (player, stored_at);
CREATE INDEX IF NOT EXISTS events_by_kind ON events (kind, stored_at);
CREATE INDEX IF NOT EXISTS events_by_batch ON events (batch_id);

CREATE TABLE IF NOT EXISTS players (
  player INTEGER NOT NULL PRIMARY KEY,
  name TEXT NOT NULL,
  level INTEGER NOT NULL,
  xp INTEGER NOT NULL,
  gold INTEGER NOT NULL,
  inventory TEXT NOT NULL,
  last_zone INTEGER NOT NULL,
  online BOOLEAN NOT NULL,
  events INTEGER NOT NULL,
  last_seen TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);
