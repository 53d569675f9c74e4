"""Files in the data dir, named by the sha256 of their bytes.

No name here ever comes from a user or a node: a path is derived only from a digest that
this module computed, so no upload can reach outside `<data dir>/files`.

Files are shared: one prepared gallery painting serves every job that uses it at that size.
Whoever writes a file holds it (`put`) until the job that refers to it is recorded, then
lets go (`release`); `collect` deletes only files that nobody holds and no live job refers
to, under the same lock as `put`, so it never races a writer (no age-based grace needed).
The store also keeps the size of each file and their total, so the quota and the disk cap
are known without walking the tree (`scan` walks it once, at start-up).
"""

import contextlib
import errno
import hashlib
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Container, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

_SHA = re.compile(r"^[0-9a-f]{64}$")
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def no_space(exc: OSError) -> bool:
    """Whether a failed write failed for lack of space (a full disk or a quota)."""
    return exc.errno in _NO_SPACE


class Holdings:
    """The bookkeeping of a content-addressed store, whatever holds its bytes (this
    module's folder, or `relay.cluster.blobs`' replica stores): the size of each file it
    knows, their total, and the files writers hold until they `release` them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: Counter[str] = Counter()
        self._sizes: dict[str, int] = {}
        self.total = 0
        """Bytes of every file the store knows."""
        self.failing: OSError | None = None
        """The last write's error, until a write succeeds or a collection frees space."""

    def _hold(self, sha: str) -> bool:
        """Hold `sha` for a writer; True if the file is already stored (nothing to write)."""
        with self._lock:
            self._held[sha] += 1
            known = sha in self._sizes
        return known and self._present(sha)

    def _present(self, sha: str) -> bool:
        """Whether a file this store knows is still stored (blocking). Only this store
        deletes its files, so yes; a store other writers share asks (`relay.cluster.blobs`)."""
        return True

    def _learn(self, sizes: dict[str, int]) -> None:
        """`sizes` is what the store holds now (a walk or a listing of it): in a shared
        store, files other writers added count and those they deleted no longer do (the
        disk cap is checked against the total). A file a writer holds here, written while
        the listing was made, is kept."""
        with self._lock:
            for sha in self._held:
                if sha in self._sizes and sha not in sizes:
                    sizes[sha] = self._sizes[sha]
            self._sizes = sizes
            self.total = sum(sizes.values())

    def _stored(self, sha: str, size: int) -> None:
        """A write of `sha` succeeded."""
        with self._lock:
            if sha not in self._sizes:
                self._sizes[sha] = size
                self.total += size
        self.failing = None

    def release(self, shas: Iterable[str]) -> None:
        """Let go of files `put` held: from now on only a live job's reference keeps them."""
        with self._lock:
            for sha in shas:
                self._held[sha] -= 1
                if self._held[sha] <= 0:
                    del self._held[sha]

    def size(self, sha: str) -> int:
        """Bytes of a stored file (0 if the store does not know it; this never blocks)."""
        return self._sizes.get(sha, 0)


class BlobStore(Holdings):
    """Content-addressed files: `put` returns a digest, `path` finds the file again.

    `put` and `collect` may run in worker threads; everything else runs on the loop.
    """

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.scan()

    def path(self, sha: str) -> Path:
        """Where the file with this digest lives (it may not exist)."""
        if not _SHA.match(sha):
            raise ValueError(f"not a sha256 digest: {sha!r}")
        return self.root / sha[:2] / sha

    def put(self, data: bytes) -> str:
        """Store `data` and hold it until `release` (blocking; off the loop when large).

        Raises OSError (ENOSPC on a full disk) with nothing left behind and nothing held.
        """
        sha = hashlib.sha256(data).hexdigest()
        path = self.path(sha)
        if self._hold(sha):
            return sha
        tmp = path.with_name(f"{sha}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        try:
            path.parent.mkdir(exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            self.release([sha])
            self.failing = exc
            raise
        self._stored(sha, len(data))
        return sha

    def read(self, sha: str) -> bytes:
        """The bytes of a stored file (blocking)."""
        return self.path(sha).read_bytes()

    def exists(self, sha: str) -> bool:
        """Whether the file is present."""
        return self.path(sha).exists()

    def scan(self) -> int:
        """Walk the store once (at start-up): learn every file's size, drop unfinished
        writes a crash left behind; return the total bytes."""
        sizes: dict[str, int] = {}
        for sub in self.root.iterdir():
            if not sub.is_dir():
                continue
            for path in sub.iterdir():
                if _SHA.match(path.name):
                    sizes[path.name] = path.stat().st_size
                elif path.name.endswith(".tmp"):
                    path.unlink(missing_ok=True)
        self._learn(sizes)
        return self.total

    def discard(self, shas: Iterable[str], live: Container[str]) -> int:
        """Delete these files now unless held or in `live`; return how many (blocking)."""
        removed = 0
        for sha in set(shas):
            with self._lock:
                if sha in self._held or sha in live or sha not in self._sizes:
                    continue
                try:
                    self.path(sha).unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:  # the next sweep tries again
                    log.error("could not delete %s: %s", sha, exc)
                    continue
                self.total -= self._sizes.pop(sha)
                removed += 1
        if removed:
            self.failing = None
        return removed

    def collect(self, live: Container[str]) -> int:
        """Delete every file neither held nor in `live`; return how many (blocking)."""
        # A full list: `discard` frees space, so the next write will tell if it fails.
        return self.discard(list(self._sizes), live)
