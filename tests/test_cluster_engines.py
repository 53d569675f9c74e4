"""The throwaway engines themselves: a real PostgreSQL and a real S3 store start, answer,
and keep each test's database and bucket apart."""

import asyncio

import pytest
from cluster_engines import S3_KEY, S3_SECRET, Postgres, SeaweedFS

asyncpg = pytest.importorskip("asyncpg")
botocore_session = pytest.importorskip("botocore.session")


async def test_postgres_answers_in_a_database_of_the_tests_own(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT current_database()") == database_url.rsplit("/", 1)[1]
        await conn.execute("CREATE TABLE t (x int)")
        await conn.execute("INSERT INTO t VALUES (1), (2)")
        assert await conn.fetchval("SELECT sum(x) FROM t") == 3
    finally:
        await conn.close()


async def test_s3_stores_and_returns_bytes(s3_server: SeaweedFS, blob_url: str) -> None:
    bucket = blob_url.removeprefix("s3://").split("?")[0]
    client = botocore_session.get_session().create_client(
        "s3",
        endpoint_url=s3_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
    )
    await asyncio.to_thread(client.put_object, Bucket=bucket, Key="a/b", Body=b"hello")
    got = await asyncio.to_thread(client.get_object, Bucket=bucket, Key="a/b")
    assert got["Body"].read() == b"hello"
    listed = await asyncio.to_thread(client.list_objects_v2, Bucket=bucket)
    assert [o["Key"] for o in listed["Contents"]] == ["a/b"]
    client.close()


def test_postgres_server_is_reachable_only_on_loopback(postgres_server: Postgres) -> None:
    assert postgres_server.url().startswith("postgresql://postgres@127.0.0.1:")


def test_seaweedfs_started_on_a_port_taken_meanwhile_starts_again_on_new_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    import cluster_engines

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    real, calls = cluster_engines.free_port, []

    def first_pick_taken() -> int:
        # The first start's filer port (the fifth pick) is held by someone else.
        calls.append(1)
        return int(taken.getsockname()[1]) if len(calls) == 5 else real()

    monkeypatch.setattr(cluster_engines, "free_port", first_pick_taken)
    server = SeaweedFS.start()
    try:
        assert len(calls) == 20  # two starts of ten ports each
        assert server.s3_port != taken.getsockname()[1]
    finally:
        server.stop()
        taken.close()
