-- As ../migrations/0005_place_by_zone_name.sql.
ALTER TABLE players DROP COLUMN place_zone;
ALTER TABLE players ADD COLUMN place_zone TEXT NOT NULL DEFAULT '';
UPDATE players SET place_x = 0, place_y = 0;
