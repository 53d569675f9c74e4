"""The cluster's node registry: every replica's nodes, as the others show them.

A node is connected to one replica, which alone schedules work on it; the page and the
API of every replica still show every node (`/api/nodes`: its state, slots, pace) and
offer every node's fast styles and methods (`/api/styles`). Each replica writes its own
nodes' rows (what the node advertised, and its public view) every tick and whenever a
node comes or goes, and reads the others' rows, keeping those written within `FRESH`
seconds (a dead replica's rows age out, and the leader deletes them with it).

The pace finished jobs showed of a node (`relay.hub.NodeHub.measure`) is kept by name: a
node that moves to another replica keeps the pace its jobs showed, not its start-up guess.
"""

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from relay.cluster.database import RETRY_FOR, retrying
from relay.dispatch import NodeInfo

NODES_SCHEMA = """
CREATE TABLE IF NOT EXISTS node_paces (
    name text PRIMARY KEY,
    pace jsonb NOT NULL,
    updated double precision NOT NULL
);

CREATE TABLE IF NOT EXISTS node_views (
    name text PRIMARY KEY,
    replica text NOT NULL,
    info jsonb NOT NULL,
    view jsonb NOT NULL,
    seen double precision NOT NULL
);
"""

NODES_LOCK = 0x5354_594C_0005
"""Advisory lock key that serialises `NodeRegistry.migrate` between replicas."""
FRESH = 5.0
"""Seconds after which another replica's node row no longer counts (its replica stopped
writing: it died, or lost the database)."""


def info_json(info: NodeInfo) -> dict[str, Any]:
    """What a node advertised, as JSON (thumbnails in base64)."""
    return {
        "name": info.name,
        "device_name": info.device_name,
        "device_memory": info.device_memory,
        "methods": sorted(info.methods),
        "styles": sorted(info.styles),
        "max_epochs": info.max_epochs,
        "max_pixels": info.max_pixels,
        "slots": info.slots,
        "titles": dict(info.titles),
        "thumbnails": {k: base64.b64encode(v).decode() for k, v in info.thumbnails.items()},
        "devices": [list(d) for d in info.devices],
    }


def info_from_json(data: Mapping[str, Any]) -> NodeInfo:
    """The `NodeInfo` `info_json` wrote."""
    return NodeInfo(
        name=str(data["name"]),
        device_name=str(data["device_name"]),
        device_memory=int(data["device_memory"]),
        methods=frozenset(data["methods"]),
        styles=frozenset(data["styles"]),
        max_epochs=int(data["max_epochs"]),
        max_pixels=int(data["max_pixels"]),
        slots=int(data["slots"]),
        titles={str(k): str(v) for k, v in data["titles"].items()},
        thumbnails={str(k): base64.b64decode(v) for k, v in data["thumbnails"].items()},
        devices=tuple((str(n), int(m), int(s)) for n, m, s in data["devices"]),
    )


@dataclass(frozen=True)
class OtherNode:
    """A node of another replica: what it advertised and its public view."""

    info: NodeInfo
    view: dict[str, Any]


class NodeRegistry:
    """This replica's rows in `node_views`, and the others' (module docstring)."""

    def __init__(self, pool: Any, replica: str, retry_for: float = RETRY_FOR) -> None:
        self.pool = pool
        self.replica = replica
        self.retry_for = retry_for
        self.others: list[OtherNode] = []
        """The other replicas' nodes, as last read."""
        self._sent: dict[str, NodeInfo] = {}
        """The advertisement each of this replica's node rows holds (by identity)."""
        self.adopted: dict[str, dict[str, tuple[float, float]]] = {}
        """Paces learnt elsewhere of this replica's nodes that have none learnt here."""
        self._paces_sent: dict[str, str] = {}

    async def migrate(self, conn: Any) -> None:
        """Create the table if missing (replicas starting at once take turns: concurrent
        `CREATE TABLE IF NOT EXISTS` statements can collide)."""
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", NODES_LOCK)
            await conn.execute(NODES_SCHEMA)

    async def sync(
        self,
        local: Iterable[tuple[NodeInfo, dict[str, Any]]],
        now: float,
        learned: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
    ) -> list[OtherNode]:
        """Write this replica's nodes (`(info, public view)` each) and the paces their jobs
        showed (`learned`), drop its rows of nodes gone, and read the others' fresh rows
        (one transaction); `adopted` then holds the paces other replicas learnt of this
        replica's nodes that have none learnt here (they moved here)."""
        local = list(local)
        names = [info.name for info, _ in local]
        learned = dict(learned or {})

        async def run() -> list[OtherNode]:
            async with self.pool.acquire() as conn, conn.transaction():
                for name, pace in learned.items():
                    shown = json.dumps({m: list(ab) for m, ab in sorted(pace.items())})
                    if self._paces_sent.get(name) != shown:
                        await conn.execute(
                            "INSERT INTO node_paces VALUES ($1, $2, $3) ON CONFLICT (name)"
                            " DO UPDATE SET pace = $2, updated = $3",
                            name,
                            shown,
                            now,
                        )
                        self._paces_sent[name] = shown
                unpaced = [n for n in names if n not in learned]
                self.adopted = {
                    r["name"]: {
                        m: (float(a), float(b)) for m, (a, b) in json.loads(r["pace"]).items()
                    }
                    for r in await conn.fetch(
                        "SELECT name, pace FROM node_paces WHERE name = ANY($1::text[])",
                        unpaced,
                    )
                }
                await conn.execute(
                    "DELETE FROM node_views WHERE replica = $1 AND NOT (name = ANY($2::text[]))",
                    self.replica,
                    names,
                )
                for info, view in local:
                    # What a node advertised (thumbnails and all) is sent again only when
                    # this replica's row of it was replaced or it reconnected as another.
                    if self._sent.get(info.name) is info and await conn.fetchval(
                        "UPDATE node_views SET view = $3, seen = $4 WHERE name = $1"
                        " AND replica = $2 RETURNING 1",
                        info.name,
                        self.replica,
                        json.dumps(view),
                        now,
                    ):
                        continue
                    await conn.execute(
                        "INSERT INTO node_views VALUES ($1, $2, $3, $4, $5)"
                        " ON CONFLICT (name) DO UPDATE"
                        " SET replica = $2, info = $3, view = $4, seen = $5",
                        info.name,
                        self.replica,
                        json.dumps(info_json(info)),
                        json.dumps(view),
                        now,
                    )
                    self._sent[info.name] = info
                rows = await conn.fetch(
                    "SELECT info, view FROM node_views WHERE replica <> $1 AND seen >= $2"
                    " ORDER BY name",
                    self.replica,
                    now - FRESH,
                )
            return [
                OtherNode(info_from_json(json.loads(r["info"])), json.loads(r["view"]))
                for r in rows
            ]

        self.others = await retrying(run, self.retry_for)
        for gone in set(self._sent) - set(names):
            del self._sent[gone]
        return self.others
