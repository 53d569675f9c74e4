"""The tables the replicas share, and `migrate`, which creates them (idempotent).

Times are seconds since the epoch, from the calling replica's clock (`now` in every call,
as in `relay.scheduler`): the replicas' clocks must agree to within a second or so (NTP).

- `replicas`: one row per live relay process: its limits (all must agree) and heartbeat.
- `clients`: the round-robin turn of each client (the lowest `turn` is served next).
- `jobs`: every job's scheduling state; the current lease (`lease`, `node`, `replica`) is
  on its row, so fencing is one conditional UPDATE. `place` orders a client's queue
  (negative: handed back to the front).
- `nodes`: the node registry (which replica holds each node's connection, what it offers).
- `stopping`: leases a node was told to stop; their slots stay busy until it confirms.
- `tokens`, `mail_outbox`, `blobs`: node tokens, e-mails to send (the leader sends them)
  and file bookkeeping, shared so that any replica can check a token or a quota.
"""

from typing import Any

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version int PRIMARY KEY);

CREATE TABLE IF NOT EXISTS replicas (
    id text PRIMARY KEY,
    limits jsonb NOT NULL,
    started double precision NOT NULL,
    seen double precision NOT NULL
);

CREATE SEQUENCE IF NOT EXISTS turns;
CREATE SEQUENCE IF NOT EXISTS places;

CREATE TABLE IF NOT EXISTS clients (
    client text PRIMARY KEY,
    turn bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS jobs (
    id text PRIMARY KEY,
    client text NOT NULL REFERENCES clients (client),
    method text NOT NULL,
    epochs integer NOT NULL,
    pixels bigint NOT NULL,
    fast_styles text[] NOT NULL DEFAULT '{}',
    state text NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    place bigint NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    handbacks integer NOT NULL DEFAULT 0,
    declined_by text[] NOT NULL DEFAULT '{}',
    failed_on text[] NOT NULL DEFAULT '{}',
    wait_until double precision NOT NULL,
    not_before double precision NOT NULL DEFAULT 0,
    lease text,
    node text,
    replica text,
    lease_started double precision,
    stall double precision,
    silent_until double precision,
    deadline double precision,
    result text,
    reason text,
    ended double precision
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (client, place) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS jobs_running ON jobs (node) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS jobs_open ON jobs (client) WHERE state IN ('queued', 'running');

CREATE TABLE IF NOT EXISTS nodes (
    name text PRIMARY KEY,
    replica text NOT NULL,
    methods text[] NOT NULL,
    styles text[] NOT NULL,
    max_epochs integer NOT NULL,
    max_pixels bigint NOT NULL,
    slots integer NOT NULL,
    started integer NOT NULL DEFAULT 0,
    draining boolean NOT NULL DEFAULT false
);

CREATE TABLE IF NOT EXISTS stopping (
    node text NOT NULL,
    lease text NOT NULL,
    until double precision NOT NULL,
    PRIMARY KEY (node, lease)
);

CREATE TABLE IF NOT EXISTS tokens (
    digest text PRIMARY KEY,
    name text NOT NULL,
    created double precision NOT NULL
);

CREATE TABLE IF NOT EXISTS mail_outbox (
    id bigserial PRIMARY KEY,
    job text NOT NULL,
    address text NOT NULL,
    kind text NOT NULL,
    created double precision NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    sent double precision
);
CREATE INDEX IF NOT EXISTS mail_unsent ON mail_outbox (created) WHERE sent IS NULL;

CREATE TABLE IF NOT EXISTS blobs (
    sha text PRIMARY KEY,
    size bigint NOT NULL,
    created double precision NOT NULL
);
"""

MIGRATE_LOCK = 0x5354_594C_0001
"""Advisory lock key that serialises `migrate` between replicas starting at once."""


async def migrate(conn: Any) -> None:
    """Create the tables if they are missing (replicas starting together take turns)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATE_LOCK)
        await conn.execute(SCHEMA)
        await conn.execute(
            "INSERT INTO schema_version VALUES ($1) ON CONFLICT DO NOTHING", SCHEMA_VERSION
        )
