"""Cluster mode end to end: three relay replicas (the real app, each in its own process)
on one throwaway PostgreSQL and a SeaweedFS bucket, load through their HTTP APIs; the
single relay (no database) measured in the same run as the peer.

    python bench/cluster_relay.py [--quick] [--replicas 3] [--jobs 1500]

Each replica process runs `relay.app.init` in cluster mode and one fake node behind the
node seam (`relay.reports`, as bench/relay.py) with 64 slots that sends two progress
reports and then a 64x48 PNG result for every offer (stored in the bucket, as a real
result is). The load comes from this process over real sockets, spread over the replicas
in turn, as a load balancer would.

1. Jobs/s: N POSTs (32 in flight) until every job is done (counted in PostgreSQL).
2. POST->done at 50 jobs/s: POST `?wait=10` (answered when the job is done, wherever it
   ran), p50/p99; and the share of progress events a WebSocket on the *next* replica got
   of a job posted to one (every job's events are watched from another replica).
3. Replica deaths: `--chaos` seconds at 40 jobs/s of jobs that take a second on their
   node, a random replica SIGKILLed every 15 s and started again (a POST refused by a
   dead replica goes to the next, as a balancer would); then: jobs accepted (202) but
   never done, results recorded more than once (a trigger counts every change of a row
   to done), attempts charged, and for each job the dead replica held, the seconds from
   the kill until another replica claimed it (goal <= dead-after + 5 s).
4. PostgreSQL restart: `pg_ctl restart -m fast` under 40 jobs/s: accepted jobs lost, and
   how long after PostgreSQL was back POSTs were answered 202 again.

Goals (issue 13, this 2-core machine): >= 250 jobs/s; p99 POST->done <= 40 ms at 50
jobs/s; >= 99% of progress events across replicas; 0 lost, 0 recorded twice, 0 attempts
charged, requeued within dead-after + 5 s; back <= 5 s after PostgreSQL. The throwaway
PostgreSQL runs without fsync: the figures are an upper bound for a durable one.
"""

import argparse
import asyncio
import io
import json
import multiprocessing as mp
import os
import platform
import random
import secrets
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from relay.config import Config  # noqa: E402

DEAD_AFTER = 5.0
IN_FLIGHT = 32


def _png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (40, 90, 160)).save(out, format="PNG")
    return out.getvalue()


PHOTO = _png((64, 48))

# ---- a replica process -------------------------------------------------------------------


async def _fake_node(reports: Any, name: str) -> None:
    from relay.dispatch import NodeInfo
    from relay.handles import OfferJob

    info = NodeInfo(name, methods=frozenset({"fast"}), styles=frozenset({"candy"}), slots=64)
    handle = reports.node_connected(info)
    results: dict[tuple[int, int], bytes] = {}

    async def run(cmd: Any) -> None:
        # Jobs of 40 px are watched over WebSockets (`latency(watch=True)`): they take a
        # moment, so the socket is open before their progress is reported.
        slow = cmd.width == 40
        if cmd.width == 32:
            # Jobs of 32 px (the replica-death phase) run a second: some are always on a
            # node when a replica dies.
            await asyncio.sleep(1.0)
        for epoch in (1, 2):
            if slow:
                await asyncio.sleep(0.15)
            reports.progress(handle, cmd.job_id, cmd.lease, epoch=epoch, epochs=2, losses={})
        png = results.setdefault((cmd.width, cmd.height), _png((cmd.width, cmd.height)))
        await reports.result(handle, cmd.job_id, cmd.lease, png, width=cmd.width, height=cmd.height)

    tasks: set[asyncio.Task[None]] = set()
    while True:
        cmd = await handle.outbox.get()
        if isinstance(cmd, OfferJob):
            task = asyncio.create_task(run(cmd))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


async def _serve_replica(config: Config, port: int, node: str) -> None:
    from relay.api import SERVICE
    from relay.app import init
    from relay.reports import NodeReports

    app = init(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    node_task = asyncio.create_task(_fake_node(NodeReports(app[SERVICE]), node))
    await asyncio.Event().wait()
    node_task.cancel()


def _replica(config: Config, port: int, node: str) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_serve_replica(config, port, node))


def _config(data_dir: Path, url: str | None, blob_url: str | None) -> Config:
    return Config(
        data_dir=data_dir,
        host="127.0.0.1",
        node_port=0,
        queue_capacity=100_000,
        max_open_jobs=100_000,
        rate_per_minute=10_000_000,
        uploads_per_client=1_000,
        client_quota_mb=100_000.0,
        database_url=url,
        blob_url=blob_url,
        replica_dead_after=DEAD_AFTER,
        tick_interval=0.5,
        # The fake node's 64 slots count: jobs of a second each at 40 jobs/s need 40.
        max_node_slots=64,
    )


class Replicas:
    """Replica processes on fixed ports; any may be killed and started again."""

    def __init__(self, count: int, url: str | None, blob_url: str | None, root: Path) -> None:
        from cluster_engines import free_port

        self.url, self.blob_url, self.root = url, blob_url, root
        self.ports = [free_port() for _ in range(count)]
        self.procs: list[Any] = [None] * count
        self.ctx = mp.get_context("spawn")
        self.starts = [0] * count

    def start(self, i: int) -> None:
        self.starts[i] += 1
        config = _config(self.root / f"r{i}-{self.starts[i]}", self.url, self.blob_url)
        proc = self.ctx.Process(target=_replica, args=(config, self.ports[i], f"node-{i}"))
        proc.start()
        self.procs[i] = proc

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.pid is not None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.join()
        self.procs[i] = None

    def stop(self) -> None:
        for i in range(len(self.procs)):
            self.kill(i)

    def base(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    async def ready(self, session: aiohttp.ClientSession, i: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{self.base(i)}/healthz") as resp:
                    if resp.status == 200 and (await resp.json())["nodes"] >= 1:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"replica {i} did not start")


# ---- the load ----------------------------------------------------------------------------


def _form(size: str | None = None) -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("content", PHOTO, filename="p.png", content_type="image/png")
    data.add_field("style", "fast:candy")
    if size is not None:
        data.add_field("size", size)
    return data


class Load:
    """Posts spread over the replicas; a replica that refuses the connection (dead) or
    answers 503 (no database) is skipped for the next, as a balancer would."""

    def __init__(self, session: aiohttp.ClientSession, replicas: Replicas) -> None:
        self.session = session
        self.replicas = replicas
        self.turn = 0
        self.accepted: dict[str, float] = {}
        self.refused: dict[int, int] = {}
        self.last_503: float = 0.0
        self.first_202_after: float | None = None

    async def post(self, query: str = "", size: str | None = None) -> tuple[str, int, float] | None:
        """One job: (its id, the replica that took it, seconds to the answer)."""
        count = len(self.replicas.ports)
        for _ in range(count * 20):
            i = self.turn % count
            self.turn += 1
            t0 = time.perf_counter()
            try:
                async with self.session.post(
                    f"{self.replicas.base(i)}/api/jobs{query}", data=_form(size)
                ) as resp:
                    body = await resp.json()
                    if resp.status in (200, 202):
                        self.accepted[body["id"]] = time.time()
                        return body["id"], i, time.perf_counter() - t0
                    self.refused[resp.status] = self.refused.get(resp.status, 0) + 1
                    if resp.status == 503:
                        self.last_503 = time.time()
                        await asyncio.sleep(0.05)
            except aiohttp.ClientError:
                self.refused[0] = self.refused.get(0, 0) + 1
        return None


async def _done_count(conn: Any) -> int:
    count: int = await conn.fetchval("SELECT count(*) FROM jobs WHERE state = 'done'")
    return count


async def throughput(load: Load, conn: Any, n: int) -> float:
    base = await _done_count(conn)
    todo = iter(range(n))

    async def worker() -> None:
        for _ in todo:
            await load.post()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    while await _done_count(conn) < base + n:
        await asyncio.sleep(0.005)
    return n / (time.perf_counter() - start)


async def latency(load: Load, n: int, rate: float, watch: bool) -> dict[str, Any]:
    """POST ?wait=10 at `rate` jobs/s; with `watch`, each job's events followed from the
    next replica's WebSocket (opened right after the 202... so ?wait is not used then)."""
    times: list[float] = []
    seen_progress = [0, 0]
    finals = [0, 0]
    missed: list[str] = []

    async def follow(job_id: str, i: int) -> None:
        other = (i + 1) % len(load.replicas.ports)
        url = f"{load.replicas.base(other)}/api/jobs/{job_id}/events"
        async with load.session.ws_connect(url) as ws:
            first = (await ws.receive()).json()
            if first["job"]["state"] not in ("queued", "running") or first["job"]["epoch"]:
                return  # opened after its progress began: not a fair sample
            got, final = 0, False
            try:
                async with asyncio.timeout(15):
                    async for msg in ws:
                        kind = msg.json()["type"]
                        got += kind == "progress"
                        final = final or kind in ("done", "failed", "cancelled")
            except TimeoutError:
                pass
            seen_progress[0] += got
            seen_progress[1] += 2
            finals[0] += final
            finals[1] += 1
            if not final:
                missed.append(job_id)

    async def one() -> None:
        if watch:
            taken = await load.post(size="40")
            if taken is not None:
                await follow(taken[0], taken[1])
            return
        t0 = time.perf_counter()
        taken = await load.post("?wait=10")
        if taken is not None:
            times.append((time.perf_counter() - t0) * 1000)

    tasks = []
    start = time.perf_counter()
    for k in range(n):
        delay = start + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    if watch:
        share = seen_progress[0] / max(1, seen_progress[1])
        return {
            "progress_share": share,
            "progress_events": seen_progress[1],
            "final_events": f"{finals[0]} of {finals[1]}",
            "missed_finals": missed[:5],
        }
    times.sort()
    return {
        "p50_ms": statistics.median(times),
        "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
    }


TRIGGERS = """
CREATE TABLE IF NOT EXISTS bench_done (job text, at double precision);
CREATE TABLE IF NOT EXISTS bench_claims (job text, replica text, at double precision);
CREATE INDEX IF NOT EXISTS bench_done_job ON bench_done (job, at);
CREATE INDEX IF NOT EXISTS bench_claims_job ON bench_claims (job, at);
CREATE OR REPLACE FUNCTION bench_log() RETURNS trigger AS $$
BEGIN
  IF NEW.state = 'done' AND OLD.state <> 'done' THEN
    INSERT INTO bench_done VALUES (NEW.id, extract(epoch from clock_timestamp()));
  END IF;
  IF NEW.state = 'running' AND OLD.state = 'queued' THEN
    INSERT INTO bench_claims VALUES (NEW.id, NEW.replica, extract(epoch from clock_timestamp()));
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS bench_log ON jobs;
CREATE TRIGGER bench_log AFTER UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION bench_log();
"""


async def chaos(load: Load, conn: Any, seconds: float, rate: float) -> dict[str, Any]:
    """`seconds` at `rate` jobs/s, a random replica killed every 15 s and restarted."""
    replicas = load.replicas
    before = set(load.accepted)
    kills: list[float] = []

    async def killer() -> None:
        t_end = time.monotonic() + seconds
        while time.monotonic() + 15 < t_end + 1:
            await asyncio.sleep(15)
            i = random.randrange(len(replicas.ports))
            at = time.time()
            replicas.kill(i)
            kills.append(at)
            await asyncio.sleep(1.0)
            replicas.start(i)

    tasks = []
    stopper = asyncio.create_task(killer())
    start = time.perf_counter()
    for k in range(int(seconds * rate)):
        delay = start + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(load.post(size="32")))
    await asyncio.gather(*tasks)
    await stopper
    accepted = set(load.accepted) - before
    # Wait for every accepted job to end (dead-after + the reaper + a claim + the run).
    deadline = time.monotonic() + DEAD_AFTER + 60
    while time.monotonic() < deadline:
        left = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE id = ANY($1::text[]) AND state <> 'done'",
            list(accepted),
        )
        if left == 0:
            break
        await asyncio.sleep(0.2)
    states = {
        row["state"]: row["n"]
        for row in await conn.fetch(
            "SELECT state, count(*) AS n FROM jobs WHERE id = ANY($1::text[]) GROUP BY state",
            list(accepted),
        )
    }
    missing = len(accepted) - sum(states.values())
    lost = sum(n for state, n in states.items() if state != "done")
    twice = await conn.fetchval(
        "SELECT count(*) FROM (SELECT job FROM bench_done WHERE job = ANY($1::text[])"
        " GROUP BY job HAVING count(*) > 1) d",
        list(accepted),
    )
    attempts = await conn.fetchval(
        "SELECT coalesce(sum(attempts), 0) FROM jobs WHERE id = ANY($1::text[])",
        list(accepted),
    )
    # For each kill: the jobs the dead replica held (claimed by it, not done at the kill),
    # and how long until another replica claimed each again.
    delays: list[float] = []
    for at in kills:
        # Claimed before the kill, not done by then, and claimed again after: how long
        # after the kill. (A job the dead replica held whose result was recorded just
        # before the kill is not counted; nor one never claimed again, which is lost.)
        rows = await conn.fetch(
            "WITH last AS (SELECT job, max(at) AS at FROM bench_claims WHERE at < $1"
            " AND at > $1 - 30 GROUP BY job),"
            " held AS (SELECT l.job FROM last l WHERE NOT EXISTS (SELECT 1 FROM bench_done d"
            " WHERE d.job = l.job AND d.at < $1))"
            " SELECT h.job, (SELECT min(n.at) FROM bench_claims n WHERE n.job = h.job"
            " AND n.at > $1) AS again FROM held h",
            at,
        )
        delays += [row["again"] - at for row in rows if row["again"] is not None]
    return {
        "accepted": len(accepted),
        "states": states,
        "lost": lost + missing,
        "recorded_twice": twice,
        "attempts_charged": attempts,
        "kills": len(kills),
        "requeued": len(delays),
        "requeue_max_s": max(delays) if delays else None,
        "requeue_p50_s": statistics.median(delays) if delays else None,
        "refused": dict(load.refused),
    }


async def pg_restart(load: Load, conn_url: str, postgres: Any, rate: float) -> dict[str, Any]:
    """20 s at `rate` jobs/s, PostgreSQL restarted (-m fast) after 5 s."""
    import asyncpg

    before = set(load.accepted)
    load.refused.clear()
    back_at: list[float] = []

    async def restarter() -> None:
        await asyncio.sleep(5)
        await asyncio.to_thread(postgres.restart)
        back_at.append(time.time())

    first_ok: list[float] = []
    tasks = []
    stopper = asyncio.create_task(restarter())
    start = time.perf_counter()

    async def one() -> None:
        taken = await load.post()
        if taken is not None and back_at and time.time() > back_at[0] and not first_ok:
            first_ok.append(time.time())

    for k in range(int(20 * rate)):
        delay = start + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    await stopper
    accepted = list(set(load.accepted) - before)
    conn = await asyncpg.connect(conn_url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE id = ANY($1::text[]) AND state <> 'done'", accepted
        )
        if left == 0:
            break
        await asyncio.sleep(0.2)
    lost = await conn.fetchval(
        "SELECT count(*) FROM jobs WHERE id = ANY($1::text[]) AND state = 'done'", accepted
    )
    await conn.close()
    return {
        "accepted": len(accepted),
        "lost": len(accepted) - lost,
        "refused": dict(load.refused),
        "back_after_s": (first_ok[0] - back_at[0]) if first_ok and back_at else None,
    }


# ---- main --------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import asyncpg
    from cluster_engines import S3_KEY, S3_SECRET, Postgres, SeaweedFS

    postgres = Postgres.start()
    try:
        s3 = SeaweedFS.start()
    except BaseException:
        postgres.stop()  # not left running behind a failed start
        raise
    os.environ.update(AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET)
    out: dict[str, Any] = {}
    started: list[Replicas] = []
    tmp = tempfile.TemporaryDirectory(prefix="bench-cluster-")
    root = Path(tmp.name)
    try:
        import botocore.session

        bucket = "bench-" + secrets.token_hex(4)
        client = botocore.session.get_session().create_client(
            "s3",
            endpoint_url=s3.endpoint,
            region_name="us-east-1",
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
        )
        client.create_bucket(Bucket=bucket)
        url = postgres.url()
        replicas = Replicas(args.replicas, url, s3.url(bucket), root)
        started.append(replicas)
        for i in range(args.replicas):
            replicas.start(i)
        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            for i in range(args.replicas):
                await replicas.ready(session, i)
            conn = await asyncpg.connect(url)
            await conn.execute(TRIGGERS)
            load = Load(session, replicas)
            await throughput(load, conn, 100)  # warm up
            out["cluster_jobs_per_s"] = await throughput(load, conn, args.jobs)
            out["cluster_latency"] = await latency(load, args.rate_n, 50.0, watch=False)
            out["cluster_events"] = await latency(load, args.rate_n // 2, 50.0, watch=True)
            if args.chaos:
                out["chaos"] = await chaos(load, conn, args.chaos, 40.0)
            await conn.close()
            if args.pg_restart:
                out["pg_restart"] = await pg_restart(load, url, postgres, 40.0)
        replicas.stop()
        # The peer: one relay, no database, same load and fake node, same run.
        single = Replicas(1, None, None, root / "single")
        started.append(single)
        single.start(0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await single.ready(session, 0)
            load = Load(session, single)

            class Counter:
                async def fetchval(self, _sql: str) -> int:
                    async with session.get(f"{single.base(0)}/metrics") as resp:
                        text = await resp.text()
                    for line in text.splitlines():
                        done = 'state="done"' in line
                        if line.startswith("stylerelay_jobs_finished_total") and done:
                            return int(float(line.rsplit(" ", 1)[1]))
                    return 0

            out["single_jobs_per_s"] = await throughput(load, Counter(), args.jobs)
            out["single_latency"] = await latency(load, args.rate_n, 50.0, watch=False)
        single.stop()
    finally:
        for group in started:
            group.stop()
        postgres.stop()
        s3.stop()
        tmp.cleanup()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts, no chaos")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1500)
    parser.add_argument("--chaos", type=float, default=60.0, help="seconds of replica kills")
    parser.add_argument("--no-pg-restart", dest="pg_restart", action="store_false")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.rate_n = 500
    if args.quick:
        args.jobs, args.rate_n, args.chaos, args.pg_restart = 200, 100, 0.0, False
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    out = asyncio.run(run(args))
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
