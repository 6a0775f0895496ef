-- A character's place names its zone (a travelling character's place is in
-- the zone it goes to, whose id the zone it left does not know). Places
-- recorded by id cannot be named: they are forgotten (the character then
-- enters its next zone at a free point).
ALTER TABLE players MODIFY COLUMN place_zone VARCHAR(64) NOT NULL DEFAULT '';
UPDATE players SET place_zone = '', place_x = 0, place_y = 0;
