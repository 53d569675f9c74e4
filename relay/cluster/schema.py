"""The tables the replicas share, and `migrate`, which creates them (idempotent).

Times are seconds since the epoch, from the calling replica's clock (`now` in every call,
as in `relay.scheduler`): the replicas' clocks must agree to within a second or so (NTP).

- `replicas`: one row per live relay process: its limits (all must agree) and heartbeat.
- `clients`: the round-robin turn of each client (the lowest `turn` is served next).
- `jobs`: every job's scheduling state; the current lease (`lease`, `node`, `replica`) is
  on its row, so fencing is one conditional UPDATE. `place` orders a client's queue
  (negative: handed back to the front). `stall` and `run_limit` (seconds) are fixed at
  submit, from the timeouts every replica shares, so a claim needs nothing but the row.
- `nodes`: the node registry (which replica holds each node's connection, what it offers).
- `stopping`: leases a node was told to stop; their slots stay busy until it confirms.
- `tokens`, `mail_outbox`, `blobs`: node tokens, e-mails to send (the leader sends them)
  and file bookkeeping, shared so that any replica can check a token or a quota.

Functions hold the rules of `relay.cluster.dispatcher` that need locks taken in order
(see its docstring), so that each of its events costs one round trip however many jobs
it places: `stylerelay_claim` (leases queued jobs in fair order to one replica's free
slots; `stylerelay_wake` says which replicas to wake), `stylerelay_finish` (a
fenced completion, then a claim for the slot it freed, in one transaction) and
`stylerelay_admit` (a client's cap of open jobs, checked as a submit inserts).
"""

from typing import Any

SCHEMA_VERSION = 2

CHANNEL = "stylerelay_work"
"""NOTIFY channel: queued work that a replica with a free slot may claim. The payload
names those replicas (comma-separated); empty: every replica."""

CLAIM_LOCK = 0x5354_594C_0003
"""Advisory lock key taken (per transaction) around each claim, see `stylerelay_claim`."""

STALE_LEASE = "SR001"
"""SQLSTATE that `stylerelay_finish` raises for a completion under a lease not current."""

TOO_MANY_OPEN = "SR002"
"""SQLSTATE that `stylerelay_admit` raises for a client at its cap of open jobs."""

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
    run_limit double precision,
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

_BUSY = """(
    (SELECT count(*) FROM jobs r WHERE r.node = n.name AND r.state = 'running')
    + (SELECT count(*) FROM stopping s WHERE s.node = n.name AND s.until >= p_now))"""
# A node's busy slots: its running jobs and the stops it has not confirmed.

FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION stylerelay_wake(p_replica text, p_now float8, p_self boolean)
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    v_others text;
BEGIN
    -- Queued work left after a submit wakes only the replicas with a free slot (this
    -- one too with `p_self`: it did not claim, and a slot of its may have freed since).
    -- Called under the claim lock (shared or not): a slot freed after this check is
    -- claimed by its own replica's dispatch, which then sees the work.
    IF EXISTS (SELECT 1 FROM jobs q WHERE q.state = 'queued' AND q.not_before <= p_now) THEN
        SELECT string_agg(DISTINCT n.replica, ',') INTO v_others FROM nodes n
        WHERE (p_self OR n.replica <> p_replica) AND NOT n.draining
          AND {_BUSY} < n.slots;
        IF v_others IS NOT NULL THEN
            PERFORM pg_notify('{CHANNEL}', v_others);
        END IF;
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION stylerelay_claim(
    p_replica text, p_now float8, p_leases text[], p_notify boolean DEFAULT false
) RETURNS TABLE (offer_node text, offer_job text, offer_lease text)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_names text[] := ARRAY[]::text[];
    v_slots int[] := ARRAY[]::int[];
    v_busy int[] := ARRAY[]::int[];
    v_started int[] := ARRAY[]::int[];
    v_hopeful boolean[] := ARRAY[]::boolean[];
    v_node record;
    v_pick record;
    v_client record;
    v_best int;
    v_taken int := 0;
BEGIN
    -- No free slot here, counted from what is committed: nothing to claim. Safe without
    -- the lock, since every change that frees a slot is followed by a dispatch of the
    -- node's replica or a NOTIFY.
    IF NOT EXISTS (
        SELECT 1 FROM nodes n
        WHERE n.replica = p_replica AND NOT n.draining AND {_BUSY} < n.slots
    ) THEN
        IF p_notify THEN
            -- A submit still says whom to wake: after every claim that began before
            -- its job was in (shared: such checks need not take turns among themselves).
            PERFORM pg_advisory_xact_lock_shared({CLAIM_LOCK});
            PERFORM stylerelay_wake(p_replica, p_now, true);
        END IF;
        RETURN;
    END IF;
    -- Claims take turns: a statement orders by the turns it saw when it began, so two
    -- claims at once could both serve the client first in line. Under this lock each
    -- claim sees the one before it (every statement below takes a new snapshot). Once
    -- it is held, nothing here waits: rows that others hold are skipped (a node held by
    -- a finish, tick or failure is dispatched again when that commits).
    PERFORM pg_advisory_xact_lock({CLAIM_LOCK});
    FOR v_node IN
        SELECT n.name, n.slots, n.started, {_BUSY} AS busy FROM nodes n
        WHERE n.replica = p_replica AND NOT n.draining
        ORDER BY n.name COLLATE "C"
        FOR UPDATE SKIP LOCKED
    LOOP
        v_names := v_names || v_node.name;
        v_slots := v_slots || v_node.slots;
        v_busy := v_busy || v_node.busy::int;
        v_started := v_started || v_node.started;
        v_hopeful := v_hopeful || (v_node.busy < v_node.slots);
    END LOOP;
    -- One job at a time, in fair order, to the least loaded node that can run the next
    -- (then the one that started fewest, then by name); a node that finds nothing
    -- queued that it can run drops out.
    LOOP
        EXIT WHEN v_taken >= coalesce(array_length(p_leases, 1), 0);
        v_best := NULL;
        FOR k IN 1 .. coalesce(array_length(v_names, 1), 0) LOOP
            CONTINUE WHEN NOT v_hopeful[k] OR v_busy[k] >= v_slots[k];
            IF v_best IS NULL
               OR (v_busy[k]::float8 / v_slots[k], v_started[k])
                  < (v_busy[v_best]::float8 / v_slots[v_best], v_started[v_best]) THEN
                v_best := k;
            END IF;
        END LOOP;
        EXIT WHEN v_best IS NULL;
        -- The clients with queued work (a skip scan of `jobs_queue`: one probe per
        -- client, however long the queue), in turn order; the first of them with a job
        -- that this node can run and that nobody holds gets it. A single ORDER BY over
        -- every queued job cost a sort of the whole queue per claim (8 ms at 2000).
        v_pick := NULL;
        FOR v_client IN
            WITH RECURSIVE waiting (client) AS (
                (SELECT w.client FROM jobs w WHERE w.state = 'queued'
                 ORDER BY w.client LIMIT 1)
                UNION ALL
                SELECT (SELECT w.client FROM jobs w
                        WHERE w.state = 'queued' AND w.client > waiting.client
                        ORDER BY w.client LIMIT 1)
                FROM waiting WHERE waiting.client IS NOT NULL
            )
            SELECT c.client FROM waiting JOIN clients c ON c.client = waiting.client
            ORDER BY c.turn
        LOOP
            SELECT q.id, q.client, q.stall, q.run_limit INTO v_pick
            FROM jobs q, nodes o
            WHERE o.name = v_names[v_best] AND q.client = v_client.client
              AND q.state = 'queued' AND q.not_before <= p_now
              AND q.method = ANY(o.methods) AND q.fast_styles <@ o.styles
              AND q.epochs <= o.max_epochs AND q.pixels <= o.max_pixels
              AND NOT (o.name = ANY(q.declined_by))
              -- a node that failed the job gets it only if no other node could run it
              AND NOT (o.name = ANY(q.failed_on) AND EXISTS (
                  SELECT 1 FROM nodes x
                  WHERE x.name <> o.name AND NOT x.draining
                    AND NOT (x.name = ANY(q.failed_on)) AND NOT (x.name = ANY(q.declined_by))
                    AND q.method = ANY(x.methods) AND q.fast_styles <@ x.styles
                    AND q.epochs <= x.max_epochs AND q.pixels <= x.max_pixels))
            ORDER BY q.place
            LIMIT 1
            FOR NO KEY UPDATE OF q SKIP LOCKED;
            CONTINUE WHEN NOT FOUND;
            -- NO KEY: a job being inserted for the client (its foreign key holds KEY
            -- SHARE on the client's row) does not make claims pass the client over.
            PERFORM 1 FROM clients c WHERE c.client = v_client.client
            FOR NO KEY UPDATE SKIP LOCKED;
            EXIT WHEN FOUND;
            v_pick := NULL;
        END LOOP;
        IF v_pick IS NULL THEN
            v_hopeful[v_best] := false;
            CONTINUE;
        END IF;
        v_taken := v_taken + 1;
        UPDATE jobs SET state = 'running', lease = p_leases[v_taken],
            node = v_names[v_best], replica = p_replica, lease_started = p_now,
            silent_until = p_now + v_pick.stall, deadline = p_now + v_pick.run_limit,
            not_before = 0
        WHERE id = v_pick.id;
        UPDATE clients SET turn = nextval('turns') WHERE client = v_pick.client;
        v_busy[v_best] := v_busy[v_best] + 1;
        v_started[v_best] := v_started[v_best] + 1;
        offer_node := v_names[v_best];
        offer_job := v_pick.id;
        offer_lease := p_leases[v_taken];
        RETURN NEXT;
    END LOOP;
    IF v_taken > 0 THEN
        UPDATE nodes n SET started = u.started
        FROM unnest(v_names, v_started) AS u (name, started)
        WHERE n.name = u.name AND n.started <> u.started;
    END IF;
    IF p_notify THEN
        PERFORM stylerelay_wake(p_replica, p_now, false);
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION stylerelay_admit(p_client text, p_max_open int)
RETURNS text LANGUAGE plpgsql AS $fn$
BEGIN
    -- Per client: two submits cannot both count, then both insert (the count below
    -- takes its snapshot after the lock, so it sees the submit before it).
    PERFORM pg_advisory_xact_lock(hashtext(p_client));
    IF (SELECT count(*) FROM jobs
        WHERE client = p_client AND state IN ('queued', 'running')) >= p_max_open THEN
        RAISE EXCEPTION 'client % has % jobs open', p_client, p_max_open
            USING ERRCODE = '{TOO_MANY_OPEN}';
    END IF;
    RETURN 'queued';
END
$fn$;

CREATE OR REPLACE FUNCTION stylerelay_finish(
    p_job text, p_lease text, p_node text, p_result text, p_now float8,
    p_replica text, p_leases text[]
) RETURNS TABLE (offer_node text, offer_job text, offer_lease text)
LANGUAGE plpgsql AS $fn$
BEGIN
    -- Fenced: only the current lease of the current node counts, once.
    UPDATE jobs SET state = 'done', result = p_result, ended = p_now
    WHERE id = p_job AND lease = p_lease AND node = p_node AND state = 'running';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'lease % of job % on % is not current', p_lease, p_job, p_node
            USING ERRCODE = '{STALE_LEASE}';
    END IF;
    RETURN QUERY SELECT * FROM stylerelay_claim(p_replica, p_now, p_leases);
END
$fn$;
"""

MIGRATE_LOCK = 0x5354_594C_0001
"""Advisory lock key that serialises `migrate` between replicas starting at once."""


async def migrate(conn: Any) -> None:
    """Create the tables if they are missing (replicas starting together take turns)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATE_LOCK)
        await conn.execute(SCHEMA)
        await conn.execute(FUNCTIONS)
        await conn.execute(
            "INSERT INTO schema_version VALUES ($1) ON CONFLICT DO NOTHING", SCHEMA_VERSION
        )
