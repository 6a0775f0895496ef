-- The operators' audit trail, appended to and never changed or trimmed: a
-- copy of the audit lists the operations store keeps capped (Redis). Grant
-- the platform's user only INSERT and SELECT on it to make that binding.
CREATE TABLE audit_log (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  at_ms BIGINT NOT NULL,
  actor VARCHAR(64) NOT NULL,
  action VARCHAR(64) NOT NULL,
  target VARCHAR(500) NOT NULL,
  result VARCHAR(500) NOT NULL,
  -- A call refused for the caller's role (the other list of the store).
  refused BOOLEAN NOT NULL
) CHARACTER SET utf8mb4;
