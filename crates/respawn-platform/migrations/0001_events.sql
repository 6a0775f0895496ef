-- Every domain event, once: the primary key is the deterministic event id
-- (zone, epoch, tick, index),
-- so a redelivered event is ignored. `batch_id` marks the consumer batch
-- that first stored a row.
CREATE TABLE IF NOT EXISTS events (
  zone INT UNSIGNED NOT NULL,
  epoch BIGINT UNSIGNED NOT NULL,
  tick BIGINT UNSIGNED NOT NULL,
  idx INT UNSIGNED NOT NULL,
  player BIGINT UNSIGNED NOT NULL,
  kind VARCHAR(32) NOT NULL,
  payload VARBINARY(4096) NOT NULL,
  batch_id BIGINT UNSIGNED NOT NULL,
  stored_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (zone, epoch, tick, idx),
  KEY by_player (player, stored_at),
  KEY by_kind (kind, stored_at)
) ENGINE = InnoDB;
