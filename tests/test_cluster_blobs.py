"""One conformance suite for every file store: the local data dir (`relay.blobs.BlobStore`),
a shared folder (`file://`) and an S3 bucket on a real SeaweedFS (`s3://`); then what
only a store shared by replicas must do."""

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from relay.app import json_errors
from relay.blobs import BlobStore
from relay.cluster.blobs import (
    Blobs,
    S3Store,
    SharedFolderStore,
    file_response,
    open_blobs,
    parse_blob_url,
)

Opener = Callable[[], Blobs]


def _openers(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens a store over the same place each time it is called (a restart, a replica)."""
    opened: list[Blobs] = []

    def make() -> Blobs:
        store: Blobs
        if kind == "local":
            store = BlobStore(tmp_path / "files")
        elif kind == "file":
            store = open_blobs(parse_blob_url(f"file://{tmp_path / 'shared'}"))
        else:
            store = open_blobs(parse_blob_url(request.getfixturevalue("blob_url")))
        opened.append(store)
        return store

    yield make
    for store in opened:
        if isinstance(store, S3Store):
            store.close()


@pytest.fixture(params=["local", "file", "s3"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Every kind of store."""
    yield from _openers(request.param, request, tmp_path)


@pytest.fixture(params=["file", "s3"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """The kinds several replicas can share."""
    yield from _openers(request.param, request, tmp_path)


def test_put_returns_the_digest_and_read_gives_the_bytes_back(opener: Opener) -> None:
    store = opener()
    sha = store.put(b"a painting")
    assert sha == hashlib.sha256(b"a painting").hexdigest()
    assert store.read(sha) == b"a painting"
    assert store.size(sha) == len(b"a painting")
    assert store.total == len(b"a painting")


def test_the_same_bytes_are_one_file(opener: Opener) -> None:
    store = opener()
    first, second = store.put(b"shared"), store.put(b"shared")
    assert first == second
    assert store.total == len(b"shared")


def test_a_missing_file_reads_as_not_found(opener: Opener) -> None:
    with pytest.raises(FileNotFoundError):
        opener().read("0" * 64)


def test_a_name_that_is_not_a_digest_is_refused(opener: Opener) -> None:
    with pytest.raises(ValueError, match="sha256"):
        opener().read("../../etc/passwd")


def test_collect_keeps_held_and_live_files_and_deletes_the_rest(opener: Opener) -> None:
    store = opener()
    held = store.put(b"held by a writer")
    live = store.put(b"kept by a live job")
    gone = store.put(b"nobody keeps me")
    store.release([live, gone])
    assert store.collect({live}) == 1
    assert store.read(held) == b"held by a writer"
    assert store.read(live) == b"kept by a live job"
    with pytest.raises(FileNotFoundError):
        store.read(gone)
    assert store.total == len(b"held by a writer") + len(b"kept by a live job")
    store.release([held])
    assert store.collect(set()) == 2
    assert store.total == 0


def test_discard_deletes_only_the_named_unkept_files(opener: Opener) -> None:
    store = opener()
    a, b = store.put(b"a"), store.put(b"b")
    store.release([a, b])
    assert store.discard([a], live=set()) == 1
    assert store.read(b) == b"b"
    with pytest.raises(FileNotFoundError):
        store.read(a)


def test_a_store_opened_again_knows_every_file_and_the_total(opener: Opener) -> None:
    first = opener()
    shas = [first.put(b"x" * 10), first.put(b"y" * 20)]
    again = opener()
    assert again.total == 30
    assert [again.size(s) for s in shas] == [10, 20]
    assert again.read(shas[1]) == b"y" * 20


# ---- shared by replicas -----------------------------------------------------------------


def test_a_replica_reads_a_file_another_replica_wrote_after_it_started(shared: Opener) -> None:
    a, b = shared(), shared()
    sha = a.put(b"from replica A")
    assert b.read(sha) == b"from replica A"


def test_collect_on_the_leader_deletes_files_other_replicas_wrote_once_unkept(
    shared: Opener,
) -> None:
    leader, other = shared(), shared()
    sha = other.put(b"written by the other replica")
    other.release([sha])
    assert leader.collect({sha}) == 0  # a live job keeps it
    assert leader.collect(set()) == 1
    # Gone from the store (the replica that wrote it may still have it in memory a while:
    # the same bytes, and no live job names them).
    with pytest.raises(FileNotFoundError):
        shared().read(sha)


def test_a_shared_folder_scan_leaves_another_replicas_unfinished_write(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    SharedFolderStore(root)
    writing = root / "ab" / ("ab" + "0" * 62 + ".123.456.tmp")
    writing.parent.mkdir()
    writing.write_bytes(b"half a file")
    crashed = root / "ab" / ("ab" + "1" * 62 + ".1.2.tmp")
    crashed.write_bytes(b"left by a crash")
    old = time.time() - 2 * 3600
    os.utime(crashed, (old, old))
    SharedFolderStore(root)  # another replica starts
    assert writing.exists()
    assert not crashed.exists()


def test_a_shared_folder_knows_the_size_of_another_replicas_file(tmp_path: Path) -> None:
    a, b = SharedFolderStore(tmp_path), SharedFolderStore(tmp_path)
    sha = a.put(b"12345")
    assert b.size(sha) == 5


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("file://relative/path", "absolute"),
        ("s3://", "bucket"),
        ("s3://b?endpoint=ftp://x", "http"),
        ("s3://b?endpont=http://x", "endpont"),
        ("gs://bucket", "expected"),
    ],
)
def test_a_wrong_blob_url_says_what_is_wrong(url: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_blob_url(url)


def test_an_s3_url_gives_bucket_prefix_and_endpoint() -> None:
    where = parse_blob_url("s3://files/relay-a?endpoint=http://127.0.0.1:8333&region=eu-1")
    assert (where.bucket, where.prefix, where.endpoint, where.region) == (
        "files",
        "relay-a/",
        "http://127.0.0.1:8333",
        "eu-1",
    )


async def test_the_api_serves_a_stored_file_from_every_store(
    opener: Opener, aiohttp_client: AiohttpClient
) -> None:
    store = opener()
    sha = store.put(b"\x89PNG result")
    headers = {"Content-Type": "image/png", "Cache-Control": "private, max-age=86400"}

    async def serve(request: web.Request) -> web.StreamResponse:
        return await file_response(store, request.match_info["sha"], headers)

    app = web.Application(middlewares=[json_errors])
    app.router.add_get("/files/{sha}", serve)
    client = await aiohttp_client(app)
    got = await client.get(f"/files/{sha}")
    assert got.status == 200
    assert await got.read() == b"\x89PNG result"
    assert (got.headers["Content-Type"], got.headers["Cache-Control"]) == (
        "image/png",
        "private, max-age=86400",
    )
    gone = await client.get("/files/" + "0" * 64)
    assert gone.status == 404
    assert await gone.json() == {"error": "The file is no longer stored."}
