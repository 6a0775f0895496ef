-- Player records projected from the events (src/projection.rs), written in
-- the transaction that stores the events they fold in. `events` counts the
-- events folded in; `last_seen` is when the newest of them was stored.
CREATE TABLE IF NOT EXISTS players (
  player BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  name VARCHAR(64) NOT NULL,
  level INT UNSIGNED NOT NULL,
  xp BIGINT UNSIGNED NOT NULL,
  gold BIGINT UNSIGNED NOT NULL,
  inventory VARCHAR(1024) NOT NULL,
  last_zone INT UNSIGNED NOT NULL,
  online BOOLEAN NOT NULL,
  events BIGINT UNSIGNED NOT NULL,
  last_seen TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
) ENGINE = InnoDB;

-- Finds the rows a batch stored (rather than ignored as already stored).
CREATE INDEX events_by_batch ON events (batch_id);
