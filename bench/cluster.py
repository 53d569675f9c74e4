"""Cluster dispatch under load: relay replicas on one PostgreSQL, against the single relay's
scheduler measured in the same run.

    python bench/cluster.py [--quick] [--replicas 3] [--jobs 3000] [--rate 50] [--no-s3]

A skeleton of issue 13's benchmark, for the parts built so far: the relay's HTTP side is not
yet wired to cluster mode, so this drives the dispatch layer directly. It starts a
throwaway PostgreSQL and SeaweedFS (tests/cluster_engines.py), then one process per replica,
each with a `PgDispatcher`, two fake nodes of 4 slots that finish every offer at once
(storing a 2 KB result in the S3 bucket first, unless --no-s3: then only the dispatch
layer is measured), and a dispatch loop woken by a NOTIFY that names the replica
(`PgDispatcher.concerns`). Jobs come from 10 clients, spread over the replicas; a job
posted to one replica may run on another's node.

1. Jobs/s: every replica posts its share as fast as it can (32 in flight each) until all
   are done.
2. Latency at `--rate` jobs/s in all: post to done, p50 and p99.

The peer: the same two runs through the single relay's `Scheduler` (`LocalDispatch`) in
one process, no database. The throwaway PostgreSQL runs without fsync, so the figures are
an upper bound for a real one.

Goals (issue 13, through the HTTP API once wired): >= 250 jobs/s through three replicas;
p99 post->done <= 40 ms at 50 jobs/s.
"""

import argparse
import asyncio
import importlib
import json
import multiprocessing as mp
import os
import secrets
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from relay.cluster.contract import Dispatch, LocalDispatch  # noqa: E402
from relay.dispatch import Action, JobTicket, NodeInfo, SendOffer  # noqa: E402
from relay.scheduler import Scheduler  # noqa: E402

CLIENTS = 10
NODES_PER_REPLICA = 2
SLOTS = 4
IN_FLIGHT = 32


def _job(i: int) -> JobTicket:
    return JobTicket(f"j{i}", f"client-{i % CLIENTS}", "fast", 1, 250_000)


def _nodes(replica: str) -> list[NodeInfo]:
    return [
        NodeInfo(f"{replica}-n{k}", methods=frozenset({"fast"}), slots=SLOTS)
        for k in range(NODES_PER_REPLICA)
    ]


class Worker:
    """One replica's fake nodes: every offer is finished at once (after an S3 write)."""

    def __init__(self, dispatch: Dispatch, blobs: Any) -> None:
        self.dispatch = dispatch
        self.blobs = blobs
        self.done: dict[str, float] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, SendOffer):
                task = asyncio.create_task(self._run(action))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _run(self, offer: SendOffer) -> None:
        result = None
        if self.blobs is not None:
            result = await asyncio.to_thread(self.blobs.put, secrets.token_bytes(2048))
        kwargs = {"result": result} if result is not None else {}
        actions = await self.dispatch.finished(
            offer.node, offer.job, offer.lease, time.time(), **kwargs
        )
        self.done[offer.job] = time.time()
        self.apply(actions)


async def _post(worker: Worker, ids: list[int], rate: float | None) -> dict[str, float]:
    """Post these jobs (at `rate` per second, or IN_FLIGHT at a time); when each went in."""
    posted: dict[str, float] = {}
    gate = asyncio.Semaphore(IN_FLIGHT)
    start = time.monotonic()

    async def one(n: int, i: int) -> None:
        async with gate:
            if rate is not None:
                await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
            job = _job(i)
            posted[job.id] = time.time()
            worker.apply(await worker.dispatch.submit(job, time.time()))

    await asyncio.gather(*(one(n, i) for n, i in enumerate(ids)))
    return posted


@dataclass(frozen=True)
class Plan:
    """What one replica process does: its database, bucket, name, jobs and pace."""

    url: str
    blob_url: str | None
    name: str
    ids: list[int]
    total: int
    rate: float | None


async def _replica_main(plan: Plan) -> dict[str, Any]:
    import asyncpg

    from relay.cluster.blobs import open_blobs, parse_blob_url
    from relay.cluster.dispatcher import CHANNEL, PgDispatcher

    url, total = plan.url, plan.total
    pool = await asyncpg.create_pool(url, min_size=4, max_size=8)
    dispatcher = PgDispatcher(pool, plan.name)
    blobs = open_blobs(parse_blob_url(plan.blob_url)) if plan.blob_url else None
    worker = Worker(dispatcher, blobs)
    wake = asyncio.Event()
    listener = await asyncpg.connect(url)

    def woken(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if dispatcher.concerns(payload):  # a submit names the replicas with a free slot
            wake.set()

    await listener.add_listener(CHANNEL, woken)

    async def dispatch_loop() -> None:
        # NOTIFYs coalesce: one dispatch per wake-up, and one every 100 ms regardless.
        while True:
            try:
                async with asyncio.timeout(0.1):
                    await wake.wait()
            except TimeoutError:
                pass
            wake.clear()
            worker.apply(await dispatcher.dispatch(time.time()))

    for info in _nodes(plan.name):
        worker.apply(await dispatcher.node_up(info, time.time()))
    looping = asyncio.create_task(dispatch_loop())
    posted = await _post(worker, plan.ids, plan.rate)
    deadline = time.monotonic() + 120
    while await pool.fetchval("SELECT count(*) FROM jobs WHERE state = 'done'") < total:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    looping.cancel()
    await listener.close()
    await pool.close()
    return {"posted": posted, "done": worker.done}


def _replica_process(plan: Plan) -> str:
    return json.dumps(asyncio.run(_replica_main(plan)))


def _figures(posted: dict[str, float], done: dict[str, float]) -> dict[str, float]:
    lat = sorted((done[j] - posted[j]) * 1000 for j in posted if j in done)
    span = max(done.values()) - min(posted.values()) if done else float("nan")
    return {
        "jobs": len(posted),
        "done": len(lat),
        "jobs_per_s": len(lat) / span if span else float("nan"),
        "p50_ms": statistics.median(lat) if lat else float("nan"),
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan"),
    }


def run_cluster(
    url: str, blob_url: str | None, replicas: int, jobs: int, rate: float | None
) -> dict[str, float]:
    """Jobs through `replicas` processes on one database; the figures."""
    share = [list(range(r, jobs, replicas)) for r in range(replicas)]
    per_rate = None if rate is None else rate / replicas
    tasks = [Plan(url, blob_url, f"r{r}", share[r], jobs, per_rate) for r in range(replicas)]
    with mp.get_context("spawn").Pool(replicas) as pool:
        outs = [json.loads(o) for o in pool.map(_replica_process, tasks)]
    posted = {k: v for o in outs for k, v in o["posted"].items()}
    done = {k: v for o in outs for k, v in o["done"].items()}
    return _figures(posted, done)


async def _run_single(jobs: int, rate: float | None) -> dict[str, float]:
    worker = Worker(LocalDispatch(Scheduler(max_slots=SLOTS)), None)
    for r in range(3):
        for info in _nodes(f"r{r}"):
            worker.apply(await worker.dispatch.node_up(info, time.time()))
    posted = await _post(worker, list(range(jobs)), rate)
    while len(worker.done) < jobs:
        await asyncio.sleep(0.005)
    return _figures(posted, worker.done)


async def _fresh_database(server: Any) -> str:
    import asyncpg

    from relay.cluster.schema import migrate

    name = "bench_" + secrets.token_hex(4)
    admin = await asyncpg.connect(server.url())
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    conn = await asyncpg.connect(server.url(name))
    await migrate(conn)
    await conn.close()
    return str(server.url(name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (smoke test)")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=50.0, help="jobs/s of the latency run")
    parser.add_argument("--no-s3", action="store_true", help="no result files in SeaweedFS")
    args = parser.parse_args()
    jobs, paced = (200, 100) if args.quick else (args.jobs, max(100, int(args.rate * 20)))

    import botocore.session

    # The tests' throwaway engines (tests/ is on sys.path above, not on mypy's).
    engines: Any = importlib.import_module("cluster_engines")
    S3_KEY, S3_SECRET = engines.S3_KEY, engines.S3_SECRET
    pg = engines.Postgres.start()
    try:
        s3 = None if args.no_s3 else engines.SeaweedFS.start()
    except BaseException:
        pg.stop()  # not left running behind a failed start
        raise
    rows: list[dict[str, Any]] = []
    try:
        blob_url = None
        if s3 is not None:
            os.environ.update({"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET})
            client = botocore.session.get_session().create_client(
                "s3", endpoint_url=s3.endpoint, region_name="us-east-1",
                aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
            )  # fmt: skip
            client.create_bucket(Bucket="bench")
            client.close()
            blob_url = s3.url("bench")
        for label, rate, count in (
            ("throughput", None, jobs),
            (f"{args.rate:g}/s", args.rate, paced),
        ):
            url = asyncio.run(_fresh_database(pg))
            cluster = run_cluster(url, blob_url, args.replicas, count, rate)
            single = asyncio.run(_run_single(count, rate))
            rows.append({"run": label, "cluster": cluster, "single": single})
    finally:
        pg.stop()
        if s3 is not None:
            s3.stop()
    print(f"{args.replicas} replicas on PostgreSQL{' + SeaweedFS' if blob_url else ''}, "
          f"{NODES_PER_REPLICA} fake nodes x {SLOTS} slots each; peer: one Scheduler")  # fmt: skip
    print(f"{'run':<12}{'who':<9}{'jobs':>6}{'jobs/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for row in rows:
        for who in ("cluster", "single"):
            f = row[who]
            print(f"{row['run']:<12}{who:<9}{f['done']:>6}{f['jobs_per_s']:>9.0f}"
                  f"{f['p50_ms']:>9.1f}{f['p99_ms']:>9.1f}")  # fmt: skip
    ratio = rows[0]["single"]["jobs_per_s"] / rows[0]["cluster"]["jobs_per_s"]
    print(f"one Scheduler in memory places jobs {ratio:.0f}x as fast as the cluster's dispatch")
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
