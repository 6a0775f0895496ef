-- Room for any event the zones publish (a 4,096-byte column refused larger
-- ones, and the consumer then retried that batch forever), and a place for
-- an event the database refuses all the same: kept, with the reason, rather
-- than holding every event behind it.
ALTER TABLE events MODIFY COLUMN payload MEDIUMBLOB NOT NULL;
CREATE TABLE refused_events (
  zone INT UNSIGNED NOT NULL,
  epoch BIGINT UNSIGNED NOT NULL,
  tick BIGINT UNSIGNED NOT NULL,
  idx INT UNSIGNED NOT NULL,
  player BIGINT UNSIGNED NOT NULL,
  reason VARCHAR(500) NOT NULL,
  payload LONGBLOB NOT NULL,
  refused_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (zone, epoch, tick, idx)
) ENGINE = InnoDB;
