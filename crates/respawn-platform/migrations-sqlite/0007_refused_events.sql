-- As ../migrations/0008_refused_events.sql (SQLite's columns have no length).
CREATE TABLE refused_events (
  zone INTEGER NOT NULL,
  epoch INTEGER NOT NULL,
  tick INTEGER NOT NULL,
  idx INTEGER NOT NULL,
  player INTEGER NOT NULL,
  reason TEXT NOT NULL,
  payload BLOB NOT NULL,
  refused_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  PRIMARY KEY (zone, epoch, tick, idx)
);
