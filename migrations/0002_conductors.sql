-- Conductors sharing the database (several with PostgreSQL, one with SQLite). A conductor
-- registers at start, heartbeats every [conductor] heartbeat_interval and unregisters on a
-- clean stop; one silent for longer than heartbeat_timeout is dead. Times are Unix
-- milliseconds by the conductor's own clock.
CREATE TABLE conductors (
    hostname TEXT PRIMARY KEY NOT NULL,
    http_url TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
