-- Takeover between conductors.
-- pending: a preparation asked for but not finished (JSON: id, target, prepared); the node's
--   owner fetches its images and then makes it the node's target. A later request replaces it.
-- reservation: the conductor doing a node's preparation work now (Ironic's column of the same
--   name); a reservation of a conductor that is not alive is free.
ALTER TABLE nodes ADD COLUMN pending TEXT;
ALTER TABLE nodes ADD COLUMN reservation TEXT;
ALTER TABLE nodes ADD COLUMN reserved_at BIGINT;
