"""Job records in the cluster: the columns a `JobRecord` adds to the shared `jobs` table.

The dispatcher's columns (`relay.cluster.schema`) say where a job is in the queue and who
holds its lease; these say what the job is (its order, its files) and what came of it.
One row holds both, so a replica answers any job's view with one primary-key read, and the
fenced statement that ends a lease records the outcome with it.

Some record fields are the dispatcher's columns under another name: `started` is the
current lease's start (`lease_started`), `finished` is `ended`, `error` is `reason`,
`result_file` is `result`.
"""

import json
from collections.abc import Mapping
from typing import Any

from relay.model import JobRecord, JobState, StyleChoice

RECORD_SCHEMA = """
ALTER TABLE jobs
    ADD COLUMN IF NOT EXISTS styles jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN IF NOT EXISTS style_files text[] NOT NULL DEFAULT '{}',
    ADD COLUMN IF NOT EXISTS content_file text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS width integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS height integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS params jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN IF NOT EXISTS email text,
    ADD COLUMN IF NOT EXISTS filename text,
    ADD COLUMN IF NOT EXISTS created double precision NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS preview_file text,
    ADD COLUMN IF NOT EXISTS email_status text,
    ADD COLUMN IF NOT EXISTS partial_file text,
    ADD COLUMN IF NOT EXISTS partial_epoch integer,
    ADD COLUMN IF NOT EXISTS unservable boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS jobs_ended ON jobs (ended)
    WHERE state IN ('done', 'failed', 'cancelled');

CREATE INDEX IF NOT EXISTS jobs_mail ON jobs (ended) WHERE email_status = 'pending';

CREATE TABLE IF NOT EXISTS catalogue (
    name text PRIMARY KEY,
    seen double precision NOT NULL
);

CREATE TABLE IF NOT EXISTS rate_buckets (
    client text PRIMARY KEY,
    tokens double precision NOT NULL,
    at double precision NOT NULL
);

-- An API key's priority p: its client is served up to 1 + p jobs a turn (`served` so far
-- in this one), as on one relay (`relay.scheduler`).
ALTER TABLE clients
    ADD COLUMN IF NOT EXISTS priority integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS served integer NOT NULL DEFAULT 0;

-- The new jobs of the last day of each API key that sets a count a day (`per_day`).
CREATE TABLE IF NOT EXISTS daily_jobs (
    client text NOT NULL,
    at double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS daily_jobs_client ON daily_jobs (client, at);

CREATE OR REPLACE FUNCTION stylerelay_queue_submit(
    p_id text, p_client text, p_method text, p_epochs integer, p_pixels bigint,
    p_fast text[], p_wait_until double precision, p_max_open integer, p_capacity integer,
    p_styles jsonb, p_style_files text[], p_content text, p_width integer, p_height integer,
    p_params jsonb, p_email text, p_filename text, p_created double precision,
    p_notify boolean, p_per_minute integer, p_per_day integer, p_priority integer,
    p_unservable integer
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    mine integer;
    waiting integer;
    v_tokens double precision;
    v_at double precision;
BEGIN
    -- One client's submits take turns, so its caps hold across replicas (each statement
    -- below sees what the one before it committed).
    PERFORM pg_advisory_xact_lock(hashtext(p_client));
    IF EXISTS (SELECT 1 FROM jobs WHERE id = p_id) THEN
        RETURN 0;  -- a submit retried after its commit's reply was lost
    END IF;
    -- New jobs a minute: a token bucket of `p_per_minute`, refilled continuously.
    SELECT tokens, at INTO v_tokens, v_at FROM rate_buckets WHERE client = p_client;
    IF NOT FOUND THEN
        v_tokens := p_per_minute;
        v_at := p_created;
    END IF;
    v_tokens := least(p_per_minute, v_tokens + greatest(0, p_created - v_at) * p_per_minute / 60.0);
    IF v_tokens < 1 THEN
        RETURN 1000 + ceil((1 - v_tokens) * 60.0 / p_per_minute)::integer;
    END IF;
    IF p_per_day IS NOT NULL AND (SELECT count(*) FROM daily_jobs
            WHERE client = p_client AND at > p_created - 86400) >= p_per_day THEN
        RETURN 3;
    END IF;
    SELECT count(*) INTO mine FROM jobs
        WHERE client = p_client AND state IN ('queued', 'running');
    IF mine >= p_max_open THEN
        RETURN 1;
    END IF;
    SELECT count(*) INTO waiting FROM jobs WHERE state = 'queued';
    IF waiting >= p_capacity THEN
        RETURN 2;
    END IF;
    -- A job no node could run (`p_unservable`: their share of the queue) waits only
    -- while fewer such jobs wait, so a flood of them cannot fill the queue.
    IF p_unservable IS NOT NULL THEN
        SELECT count(*) INTO waiting FROM jobs WHERE state = 'queued' AND unservable;
        IF waiting >= p_unservable THEN
            RETURN 1000000 + waiting;
        END IF;
    END IF;
    IF EXISTS (SELECT 1 FROM jobs WHERE client = p_client AND state = 'queued') THEN
        UPDATE clients SET priority = p_priority WHERE client = p_client;
    ELSE
        INSERT INTO clients (client, turn, priority) VALUES (p_client, nextval('turns'), p_priority)
            ON CONFLICT (client) DO UPDATE SET turn = nextval('turns'), priority = p_priority,
            served = 0;
    END IF;
    INSERT INTO jobs (id, client, method, epochs, pixels, fast_styles, state, place,
        wait_until, styles, style_files, content_file, width, height, params, email,
        filename, created, unservable)
    VALUES (p_id, p_client, p_method, p_epochs, p_pixels, p_fast, 'queued',
        nextval('places'), p_wait_until, p_styles, p_style_files, p_content, p_width,
        p_height, p_params, p_email, p_filename, p_created, p_unservable IS NOT NULL);
    INSERT INTO rate_buckets VALUES (p_client, v_tokens - 1, p_created)
        ON CONFLICT (client) DO UPDATE SET tokens = v_tokens - 1, at = p_created;
    IF p_per_day IS NOT NULL THEN
        INSERT INTO daily_jobs VALUES (p_client, p_created);
    END IF;
    IF p_notify THEN
        PERFORM pg_notify('stylerelay_work', '');
    END IF;
    RETURN 0;
END $$;

CREATE OR REPLACE FUNCTION stylerelay_queue_claim(
    p_replica text, p_now double precision, p_rooms jsonb, p_lock bigint
) RETURNS SETOF jobs LANGUAGE plpgsql AS $$
DECLARE
    v_room jsonb;
    v_node text;
    v_methods text[];
    v_styles text[];
    v_epochs integer;
    v_pixels bigint;
    v_pick record;
    v_n integer;
    v_full boolean := true;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM jobs WHERE state = 'queued' AND not_before <= p_now) THEN
        RETURN;
    END IF;
    -- Claims take turns: each sees the turns the one before it moved on.
    PERFORM pg_advisory_xact_lock(p_lock);
    FOR v_room IN SELECT value FROM jsonb_array_elements(p_rooms) LOOP
        v_node := v_room->>'name';
        v_methods := ARRAY(SELECT jsonb_array_elements_text(v_room->'methods'));
        v_styles := ARRAY(SELECT jsonb_array_elements_text(v_room->'styles'));
        v_epochs := (v_room->>'max_epochs')::integer;
        v_pixels := (v_room->>'max_pixels')::bigint;
        FOR v_n IN 1..(v_room->>'free')::integer LOOP
            SELECT j.id, j.client INTO v_pick FROM jobs j JOIN clients c ON c.client = j.client
                WHERE j.state = 'queued' AND j.not_before <= p_now
                  AND j.method = ANY(v_methods) AND j.fast_styles <@ v_styles
                  AND j.epochs <= v_epochs AND j.pixels <= v_pixels
                  AND NOT (v_node = ANY(j.declined_by))
                ORDER BY c.turn, j.place
                LIMIT 1
                FOR UPDATE OF j, c SKIP LOCKED;
            IF NOT FOUND THEN
                v_full := false;
                EXIT;
            END IF;
            -- Priority: the client keeps its turn for up to `priority` more jobs.
            UPDATE clients SET
                served = CASE WHEN served < priority THEN served + 1 ELSE 0 END,
                turn = CASE WHEN served < priority THEN turn ELSE nextval('turns') END
                WHERE client = v_pick.client;
            RETURN QUERY UPDATE jobs SET state = 'running',
                lease = replace(gen_random_uuid()::text, '-', ''), node = v_node,
                replica = p_replica, lease_started = p_now, not_before = 0,
                silent_until = NULL, deadline = NULL
                WHERE id = v_pick.id RETURNING *;
        END LOOP;
    END LOOP;
    -- Every free slot here took a job: what is left may be for the other replicas.
    IF v_full THEN
        PERFORM pg_notify('stylerelay_work', '');
    END IF;
END $$;

CREATE TABLE IF NOT EXISTS previews (
    job text PRIMARY KEY,
    jpeg bytea NOT NULL,
    n integer NOT NULL
);
"""
"""Added to the dispatcher's tables by `migrate_records` (idempotent)."""

RECORD_LOCK = 0x5354_594C_0004
"""Advisory lock key that serialises `migrate_records` between replicas starting at once."""

COLUMNS = (
    "id, client, method, styles, style_files, content_file, width, height, epochs,"
    " params, email, filename, state, attempts, created, lease_started, ended,"
    " node, reason, result, preview_file, email_status,"
    " partial_file, partial_epoch"
)
SELECT = f"SELECT {COLUMNS} FROM jobs"


async def migrate_records(conn: Any) -> None:
    """Add the record columns to the shared tables (after `relay.cluster.schema.migrate`)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", RECORD_LOCK)
        await conn.execute(RECORD_SCHEMA)


def insert_columns(job: JobRecord) -> dict[str, Any]:
    """The record's columns for the row `PgDispatcher.submit` inserts."""
    return {
        "styles": json.dumps([[s.id, s.weight] for s in job.styles]),
        "style_files": list(job.style_files),
        "content_file": job.content_file,
        "width": job.width,
        "height": job.height,
        "params": json.dumps(dict(job.params), sort_keys=True),
        "email": job.email,
        "filename": job.filename,
        "created": job.created,
    }


def record_of(row: Mapping[str, Any]) -> JobRecord:
    """The `JobRecord` of a row read with `SELECT`."""
    state = JobState(row["state"])
    reason = row["reason"]
    return JobRecord(
        id=row["id"],
        client=row["client"],
        method=row["method"],
        styles=tuple(StyleChoice(i, float(w)) for i, w in json.loads(row["styles"])),
        style_files=tuple(row["style_files"]),
        content_file=row["content_file"],
        width=row["width"],
        height=row["height"],
        epochs=row["epochs"],
        params=json.loads(row["params"]),
        email=row["email"],
        filename=row["filename"],
        state=state,
        attempts=row["attempts"],
        created=row["created"],
        started=row["lease_started"] if state is not JobState.QUEUED else None,
        finished=row["ended"] if state.final else None,
        node=row["node"] if state is not JobState.QUEUED else None,
        # The dispatcher's word for a cancel is its own; the record's is the person's.
        error=("Cancelled by request." if state is JobState.CANCELLED else reason)
        if state in (JobState.FAILED, JobState.CANCELLED)
        else None,
        result_file=row["result"],
        preview_file=row["preview_file"],
        email_status=row["email_status"],
        partial_file=row["partial_file"],
        partial_epoch=row["partial_epoch"],
    )


def record_json(job: JobRecord) -> dict[str, Any]:
    """A record as JSON, to travel with an ending to the other replicas."""
    return {
        **{name: getattr(job, name) for name in _FIELDS},
        "styles": [[s.id, s.weight] for s in job.styles],
        "style_files": list(job.style_files),
        "params": dict(job.params),
        "state": str(job.state),
    }


def record_from_json(data: Mapping[str, Any]) -> JobRecord:
    """The record `record_json` sent (ValueError, KeyError or TypeError if malformed)."""
    return JobRecord(
        **{name: data[name] for name in _FIELDS},
        styles=tuple(StyleChoice(str(i), float(w)) for i, w in data["styles"]),
        style_files=tuple(str(f) for f in data["style_files"]),
        params=dict(data["params"]),
        state=JobState(data["state"]),
    )


_FIELDS = tuple(
    name
    for name in JobRecord.__dataclass_fields__
    if name not in ("styles", "style_files", "params", "state")
)
