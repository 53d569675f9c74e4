"""Replicas: who is alive, that they agree on limits, and which one leads.

- `join`: a replica registers with its limits (the settings that must be the same on
  every replica, `limits_of`); it refuses to start (`ReplicaMismatch`, naming the
  settings) beside a live replica whose limits differ, since a cap that one replica
  enforces and another does not is no cap.
- `heartbeat`: every replica refreshes its row; one silent for `dead_after` is dead.
- `Leader`: one replica holds a session-level PostgreSQL advisory lock on a connection of
  its own; it runs the reaper (`reap`: a dead replica's running jobs are requeued, no
  attempt charged), the expiry sweep, file collection and the mail outbox. When the
  leader's process or connection dies PostgreSQL releases the lock, and the next
  replica's `try_lead` takes it.
"""

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from relay.cluster.dispatcher import PgDispatcher
from relay.config import Config
from relay.dispatch import Action
from relay.errors import ConfigError

LEADER_LOCK = 0x5354_594C_0002
"""Advisory lock key of the leader."""

LIMIT_SETTINGS = (
    "max_epochs",
    "max_pixels",
    "max_size",
    "default_size",
    "max_upload_mb",
    "result_ttl",
    "queue_capacity",
    "queue_unservable",
    "max_open_jobs",
    "rate_per_minute",
    "stall_timeout",
    "epoch_budget",
    "client_quota_mb",
    "max_disk_gb",
    "queue_timeout",
    "unservable_after",
    "max_node_slots",
    "node_pause",
    "replica_dead_after",
)
"""Settings every replica must share: caps and timeouts that decide a job's fate."""


class ReplicaMismatch(ConfigError):
    """A live replica runs with different limits: this one refuses to start."""


def limits_of(config: Config) -> dict[str, Any]:
    """The settings of `config` that every replica must share (`LIMIT_SETTINGS`)."""
    return {name: getattr(config, name) for name in LIMIT_SETTINGS}


async def join(
    conn: Any, replica: str, limits: Mapping[str, Any], now: float, dead_after: float
) -> None:
    """Register `replica`, or raise `ReplicaMismatch` if a live one has other limits."""
    async with conn.transaction():
        # Replicas starting together check one after the other.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LEADER_LOCK + 1)
        rows = await conn.fetch(
            "SELECT id, limits FROM replicas WHERE seen >= $1 AND id <> $2",
            now - dead_after,
            replica,
        )
        for row in rows:
            theirs = json.loads(row["limits"])
            differ = sorted(k for k in set(theirs) | set(limits) if theirs.get(k) != limits.get(k))
            if differ:
                shown = ", ".join(
                    f"--{k.replace('_', '-')} {limits.get(k)} (theirs: {theirs.get(k)})"
                    for k in differ
                )
                raise ReplicaMismatch(
                    f"replica {row['id']} is running with other limits: {shown}; "
                    "every replica must use the same ones"
                )
        await conn.execute(
            "INSERT INTO replicas VALUES ($1, $2, $3, $3) ON CONFLICT (id) DO UPDATE"
            " SET limits = $2, started = $3, seen = $3",
            replica,
            json.dumps(dict(limits)),
            now,
        )


async def heartbeat(
    conn: Any, replica: str, now: float, limits: Mapping[str, Any] | None = None
) -> None:
    """This replica is alive at `now`. With its `limits`, it joins again if the others
    had taken it for dead and forgotten it (so its jobs are requeued if it dies later)."""
    if limits is None:
        await conn.execute("UPDATE replicas SET seen = $2 WHERE id = $1", replica, now)
        return
    await conn.execute(
        "INSERT INTO replicas VALUES ($1, $2, $3, $3) ON CONFLICT (id) DO UPDATE SET seen = $3",
        replica,
        json.dumps(dict(limits)),
        now,
    )


async def leave(conn: Any, replica: str) -> None:
    """This replica stops on purpose (its jobs were handed back by its nodes' Byes)."""
    await conn.execute("DELETE FROM replicas WHERE id = $1", replica)


async def reap(dispatcher: PgDispatcher, now: float, dead_after: float) -> list[Action]:
    """Requeue the running jobs of every replica silent for `dead_after` (the leader's
    job), without charging an attempt, and forget those replicas and their nodes."""
    dead = await dispatcher.pool.fetch(
        "SELECT id FROM replicas WHERE seen < $1 ORDER BY id", now - dead_after
    )
    actions: list[Action] = []
    for row in dead:
        why = f"relay replica {row['id']} stopped answering"
        actions += await dispatcher.requeue_replica(row["id"], now, why)
        await dispatcher.pool.execute("DELETE FROM replicas WHERE id = $1", row["id"])
    return actions


class Leader:
    """The leader's advisory lock, held on a connection of its own; `connect` makes a new
    one when that connection is lost (PostgreSQL restarted: the lock went with it)."""

    def __init__(self, conn: Any, connect: Callable[[], Awaitable[Any]] | None = None) -> None:
        self.conn = conn
        self.connect = connect
        self.leading = False

    async def try_lead(self) -> bool:
        """Take the lead if nobody holds it; True while this replica leads."""
        if self.conn.is_closed():
            # The lock was released with the connection: another replica may lead now.
            self.leading = False
            if self.connect is not None:
                self.conn = await self.connect()
        if not self.leading:
            self.leading = bool(
                await self.conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK)
            )
        return self.leading

    async def step_down(self) -> None:
        """Let another replica lead."""
        if self.leading:
            await self.conn.execute("SELECT pg_advisory_unlock($1)", LEADER_LOCK)
            self.leading = False
