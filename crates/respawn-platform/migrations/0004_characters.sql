-- Kept characters (src/projection.rs): where the character last stood
-- (place_zone 0: nowhere yet), its newest stay's incarnation, and its hold:
-- 0 at rest, 1 claimed for hold_zone at hold_at_ms (Unix ms), 2 in hold_zone.
ALTER TABLE players
  ADD COLUMN place_zone INT UNSIGNED NOT NULL DEFAULT 0,
  ADD COLUMN place_x INT NOT NULL DEFAULT 0,
  ADD COLUMN place_y INT NOT NULL DEFAULT 0,
  ADD COLUMN incarnation BIGINT UNSIGNED NOT NULL DEFAULT 0,
  ADD COLUMN hold TINYINT UNSIGNED NOT NULL DEFAULT 0,
  ADD COLUMN hold_zone VARCHAR(64) NOT NULL DEFAULT '',
  ADD COLUMN hold_at_ms BIGINT UNSIGNED NOT NULL DEFAULT 0;
