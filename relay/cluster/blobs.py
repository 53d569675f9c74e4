"""Where the files go in cluster mode (`--blob-url`): a shared folder or an S3 bucket.

Both keep the contract of `relay.blobs.BlobStore` (content-addressed; `put` holds a file
until `release`; `collect` deletes only what nobody holds and no live job refers to;
blocking calls, which the relay runs off the loop) so the job service need not know
which one it has (`Blobs`). What changes with several replicas writing to one place:

- `SharedFolderStore` (`file:///srv/stylerelay-files`, an NFS or similar mount): another
  replica's unfinished write (`*.tmp`) is not deleted by a scan unless it is an hour old,
  and a file another replica wrote is found on the disk (its size, its bytes) even though
  this replica's index has not seen it.
- `S3Store` (`s3://bucket/prefix?endpoint=http://host:port`, credentials from
  `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`): an object appears whole or not at all,
  so there are no temporary files; a read of a missing file raises FileNotFoundError and
  a failed request OSError (EIO), as the local disk would.

Which files are live across replicas (a job on replica A keeps a file replica B wrote) is
the PostgreSQL job table's to say; the leader runs `collect` with that set.
"""

import asyncio
import contextlib
import errno
import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from aiohttp import web

from relay.blobs import _SHA, BlobStore, Holdings
from relay.errors import ApiError, NotFound


class StoreUnavailable(ApiError):
    """503: the shared store did not take a new job's images (S3 unreachable, say); the
    request may be tried again later. Its address is kept out of the message."""

    status = 503

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "The relay's file store is not answering; no job was taken. "
            f"Try again in {retry_after} s.",
            {"Retry-After": str(retry_after)},
        )


STALE_TMP = 3600.0
"""Age after which an unfinished write in a shared folder is taken for a crashed one."""


class Blobs(Protocol):
    """What the job service needs of a file store (`relay.blobs.BlobStore` is one)."""

    total: int
    failing: OSError | None

    def put(self, data: bytes) -> str:
        """Store and hold `data`; its sha256 hex digest (blocking)."""
        ...

    def release(self, shas: Iterable[str]) -> None:
        """Let go of files `put` held."""
        ...

    def size(self, sha: str) -> int:
        """Bytes of a stored file (0 if unknown); never blocks."""
        ...

    def read(self, sha: str) -> bytes:
        """The file's bytes (blocking); FileNotFoundError if it is not there."""
        ...

    def scan(self) -> int:
        """Learn every file's size; the total."""
        ...

    def discard(self, shas: Iterable[str], live: Container[str]) -> int:
        """Delete these files unless held or live; how many (blocking)."""
        ...

    def collect(self, live: Container[str]) -> int:
        """Delete every file neither held nor live; how many (blocking)."""
        ...


@dataclass(frozen=True)
class BlobLocation:
    """A parsed `--blob-url`: a folder (`file://`) or a bucket and its endpoint (`s3://`)."""

    scheme: str
    path: Path | None = None
    bucket: str = ""
    prefix: str = ""
    endpoint: str | None = None
    region: str = "us-east-1"


def parse_blob_url(text: str) -> BlobLocation:
    """`file:///abs/path` or `s3://bucket[/prefix][?endpoint=http://host:port&region=r]`;
    ValueError saying what is wrong otherwise."""
    parts = urlsplit(text.strip())
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(
                f"a file URL names an absolute folder, file:///srv/files; got {text!r}"
            )
        return BlobLocation("file", path=Path(unquote(parts.path)))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"an s3 URL names a bucket, s3://bucket?endpoint=...; got {text!r}")
        query = parse_qs(parts.query)
        unknown = set(query) - {"endpoint", "region"}
        if unknown:
            raise ValueError(f"unknown s3 URL option {sorted(unknown)[0]!r} (endpoint, region)")
        endpoint = query.get("endpoint", [None])[-1]
        if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
            raise ValueError(f"the s3 endpoint is an http(s) URL; got {endpoint!r}")
        prefix = parts.path.strip("/")
        return BlobLocation(
            "s3",
            bucket=parts.netloc,
            prefix=prefix + "/" if prefix else "",
            endpoint=endpoint,
            region=query.get("region", ["us-east-1"])[-1],
        )
    raise ValueError(f"expected file:///path or s3://bucket?endpoint=...; got {text!r}")


async def file_response(blobs: "Blobs", sha: str, headers: Mapping[str, str]) -> web.StreamResponse:
    """The HTTP answer carrying a stored file, whichever the store: sent from the disk
    (sendfile, ranges) where it has a path, else read (off the loop) and sent as bytes.
    404 (JSON) if the file is gone."""
    if isinstance(blobs, BlobStore):
        path = blobs.path(sha)
        if not path.is_file():
            raise NotFound("The file is no longer stored.")
        return web.FileResponse(path, headers=headers)
    try:
        data = await asyncio.to_thread(blobs.read, sha)
    except FileNotFoundError:
        raise NotFound("The file is no longer stored.") from None
    return web.Response(body=data, headers=headers)


def open_blobs(location: BlobLocation) -> "SharedFolderStore | S3Store":
    """The store a `--blob-url` names (S3: credentials from the environment)."""
    if location.scheme == "file":
        assert location.path is not None
        return SharedFolderStore(location.path)
    return S3Store(location)


class SharedFolderStore(BlobStore):
    """`BlobStore` on a folder several replicas share (see the module docstring)."""

    remote = False
    """Files are local paths: the API may send them with sendfile."""

    def size(self, sha: str) -> int:
        """Bytes of a stored file, looked up on the disk if another replica wrote it."""
        known = super().size(sha)
        if known:
            return known
        try:
            return self.path(sha).stat().st_size
        except (OSError, ValueError):
            return 0

    def _present(self, sha: str) -> bool:
        """Whether a file this replica knows is still there: another replica may have
        deleted it since (a job deleted or expired through it), and a new job that sends
        the same image again must not name a missing file."""
        return self.path(sha).is_file()

    def scan(self) -> int:
        """Learn the files on disk; drop only unfinished writes old enough to be dead."""
        self._walk()
        return self.total

    def _walk(self) -> dict[str, float]:
        """Look at every file in the folder once: learn their sizes (`_learn`), drop
        unfinished writes old enough to be dead; each file's time of writing."""
        sizes: dict[str, int] = {}
        written: dict[str, float] = {}
        now = time.time()
        for sub in self.root.iterdir():
            if not sub.is_dir():
                continue
            for path in sub.iterdir():
                with contextlib.suppress(OSError):  # gone meanwhile: another replica's
                    if _SHA.match(path.name):
                        stat = path.stat()
                        sizes[path.name] = stat.st_size
                        written[path.name] = stat.st_mtime
                    elif path.name.endswith(".tmp") and now - path.stat().st_mtime > STALE_TMP:
                        path.unlink()  # younger: another replica may be writing it now
        self._learn(sizes)
        return written

    def discard(self, shas: Iterable[str], live: Container[str]) -> int:
        """As `BlobStore.discard`, also for files another replica wrote."""
        for sha in set(shas):
            if sha not in self._sizes and _SHA.match(sha):
                with contextlib.suppress(OSError), self._lock:
                    self._sizes[sha] = self.path(sha).stat().st_size
                    self.total += self._sizes[sha]
        return super().discard(shas, live)

    def collect(self, live: Container[str]) -> int:
        """Delete every file in the folder neither held nor in `live` (blocking)."""
        self.scan()  # other replicas' files too
        return super().collect(live)

    def written_before(self, before: float) -> list[str]:
        """Every file in the folder last written before `before` (blocking); the same look
        learns every file's size (`scan`)."""
        return [sha for sha, at in self._walk().items() if at < before]


CACHE_BYTES = 64 * 1024 * 1024
"""Bytes of recently written files an S3 store keeps in memory (`S3Store._keep`)."""


def _s3_error(exc: Exception, what: str) -> OSError:
    """A failed S3 request as the OSError a disk would raise (the callers handle those).
    Its `strerror`, which people may be shown (a requeued job's reason), names no address;
    the request's own error, for the log, is its `filename`."""
    return OSError(errno.EIO, f"S3 {what} failed", str(exc))


class S3Store(Holdings):
    """Content-addressed files in an S3 bucket (see the module docstring)."""

    remote = True
    """Every call is a network request: run it off the loop, however small the file."""

    def __init__(self, location: BlobLocation, client: Any = None) -> None:
        super().__init__()
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cached = 0
        self._cache_lock = threading.Lock()
        self.location = location
        self.bucket = location.bucket
        self._client = client or _client(location)
        self.scan()

    def key(self, sha: str) -> str:
        """The object key of a file."""
        if not _SHA.match(sha):
            raise ValueError(f"not a sha256 digest: {sha!r}")
        return f"{self.location.prefix}{sha[:2]}/{sha}"

    def put(self, data: bytes) -> str:
        """Store `data` and hold it until `release` (blocking); OSError if the store fails."""
        sha = hashlib.sha256(data).hexdigest()
        if self._hold(sha):
            return sha
        try:
            self._client.put_object(Bucket=self.bucket, Key=self.key(sha), Body=data)
        except Exception as exc:
            self.release([sha])
            self.failing = _s3_error(exc, "write")
            raise self.failing from exc
        self._stored(sha, len(data))
        self._keep(sha, data)
        return sha

    def _present(self, sha: str) -> bool:
        """Whether a file this replica knows is still in the bucket (one HEAD request):
        another replica may have deleted it since (see `SharedFolderStore._present`). If
        the bucket cannot say, no: writing it again is harmless."""
        try:
            return self.exists(sha)
        except OSError:
            return False

    def _keep(self, sha: str, data: bytes) -> None:
        """Keep a file just written in memory a while: the replica that took a job usually
        offers it to a node at once, and need not fetch back what it just sent."""
        with self._cache_lock:
            if sha in self._cache or len(data) > CACHE_BYTES // 8:
                return
            self._cache[sha] = data
            self._cached += len(data)
            while self._cached > CACHE_BYTES:
                _, old = self._cache.popitem(last=False)
                self._cached -= len(old)

    def read(self, sha: str) -> bytes:
        """The bytes of a stored file (blocking); FileNotFoundError if it is not there."""
        with self._cache_lock:
            kept = self._cache.get(sha)
        if kept is not None:
            return kept
        key = self.key(sha)
        try:
            reply = self._client.get_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _missing(exc):
                raise FileNotFoundError(errno.ENOENT, "no such file", sha) from None
            raise _s3_error(exc, "read") from exc
        body = reply["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
        return data

    def exists(self, sha: str) -> bool:
        """Whether the file is in the bucket (blocking)."""
        key = self.key(sha)
        try:
            self._client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _missing(exc):
                return False
            raise _s3_error(exc, "lookup") from exc
        return True

    def scan(self) -> int:
        """List the bucket once: learn every file's size; return the total."""
        self._learn({name: int(item["Size"]) for name, item in self._listing()})
        return self.total

    def discard(self, shas: Iterable[str], live: Container[str]) -> int:
        """Delete these files unless held or in `live`; return how many (blocking)."""
        removed = 0
        for sha in set(shas):
            with self._cache_lock:
                if sha not in live and (kept := self._cache.pop(sha, None)) is not None:
                    self._cached -= len(kept)
            with self._lock:
                if sha in self._held or sha in live:
                    continue
            try:
                self._client.delete_object(Bucket=self.bucket, Key=self.key(sha))
            except Exception as exc:  # the next sweep tries again
                if not _missing(exc):
                    continue
            with self._lock:
                self.total -= self._sizes.pop(sha, 0)
            removed += 1
        return removed

    def collect(self, live: Container[str]) -> int:
        """Delete every file in the bucket neither held nor in `live` (blocking)."""
        self.scan()  # other replicas' files too
        return self.discard(list(self._sizes), live)

    def written_before(self, before: float) -> list[str]:
        """Every file in the bucket last written before `before` (blocking); the same
        listing learns every file's size (`scan`)."""
        listing = self._listing()
        self._learn({name: int(item["Size"]) for name, item in listing})
        return [name for name, item in listing if item["LastModified"].timestamp() < before]

    def _listing(self) -> list[tuple[str, Any]]:
        """(name, S3 listing entry) of every stored file in the bucket (blocking)."""
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.location.prefix
        )
        found: list[tuple[str, Any]] = []
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    name = item["Key"].rsplit("/", 1)[-1]
                    if _SHA.match(name):
                        found.append((name, item))
        except Exception as exc:
            raise _s3_error(exc, "listing") from exc
        return found

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()


def _missing(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    return str(code) in ("NoSuchKey", "404", "NotFound")


def _client(location: BlobLocation) -> Any:
    """A botocore S3 client; keys from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY."""
    try:
        from botocore.config import Config as BotoConfig  # noqa: PLC0415 (cluster extra)
        from botocore.session import get_session  # noqa: PLC0415
    except ImportError:  # pragma: no cover - the cluster extra is missing
        raise RuntimeError(
            "--blob-url s3://... needs the cluster extra: pip install 'stylerelay[cluster]'"
        ) from None
    return get_session().create_client(
        "s3",
        endpoint_url=location.endpoint,
        region_name=location.region,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
        # Path-style: self-hosted stores (SeaweedFS, MinIO) have no per-bucket host names.
        config=BotoConfig(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=32,
        ),
    )
