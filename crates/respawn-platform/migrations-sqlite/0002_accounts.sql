-- Players' accounts: the same tables as ../migrations/0003_accounts.sql in
-- SQLite's types (64-bit unsigned values as their signed bit patterns).
CREATE TABLE IF NOT EXISTS accounts (
  id INTEGER NOT NULL PRIMARY KEY,
  username TEXT NULL,
  password_hash TEXT NULL,
  device_hash TEXT NULL,
  character_name TEXT NOT NULL,
  character_key TEXT NOT NULL,
  disabled TEXT NULL,
  created_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS accounts_username ON accounts (username);
CREATE UNIQUE INDEX IF NOT EXISTS accounts_character_key ON accounts (character_key);
CREATE UNIQUE INDEX IF NOT EXISTS accounts_device_hash ON accounts (device_hash);

CREATE TABLE IF NOT EXISTS refresh_tokens (
  hash TEXT NOT NULL PRIMARY KEY,
  account INTEGER NOT NULL,
  family TEXT NOT NULL,
  expires_ms INTEGER NOT NULL,
  spent BOOLEAN NOT NULL DEFAULT FALSE
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS refresh_by_account ON refresh_tokens (account);
CREATE INDEX IF NOT EXISTS refresh_by_family ON refresh_tokens (family);
