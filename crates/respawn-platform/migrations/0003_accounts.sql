-- Players' accounts (src/accounts): the id is also the character's player
-- id. `username` is stored lowercase; `character_key` is the character's
-- name lowercased, so names differing only in case are one name. Ids and
-- times are signed (account ids are below 2^53), as in SQLite, so one set
-- of statements serves both databases.
CREATE TABLE IF NOT EXISTS accounts (
  id BIGINT NOT NULL PRIMARY KEY,
  username VARCHAR(32) NULL,
  password_hash VARCHAR(255) NULL,
  device_hash CHAR(64) NULL,
  character_name VARCHAR(24) NOT NULL,
  character_key VARCHAR(24) NOT NULL,
  disabled VARCHAR(500) NULL,
  created_ms BIGINT NOT NULL,
  UNIQUE KEY username (username),
  UNIQUE KEY character_key (character_key),
  UNIQUE KEY device_hash (device_hash)
) ENGINE = InnoDB;

-- Refresh tokens, by the hash of their secret. A spent token stays (`spent`)
-- until it expires, so its reuse is recognised and revokes its family.
CREATE TABLE IF NOT EXISTS refresh_tokens (
  hash CHAR(64) NOT NULL PRIMARY KEY,
  account BIGINT NOT NULL,
  family CHAR(32) NOT NULL,
  expires_ms BIGINT NOT NULL,
  spent BOOLEAN NOT NULL DEFAULT FALSE,
  KEY refresh_by_account (account),
  KEY refresh_by_family (family)
) ENGINE = InnoDB;
