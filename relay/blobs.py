"""Files in the data dir, named by the sha256 of their bytes.

No name here ever comes from a user or a node: a path is derived only from a digest that
this module computed, so no upload can reach outside `<data dir>/files`.
"""

import hashlib
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

_SHA = re.compile(r"^[0-9a-f]{64}$")


class BlobStore:
    """Content-addressed files: `put` returns a digest, `path` finds the file again."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, sha: str) -> Path:
        """Where the file with this digest lives (it may not exist)."""
        if not _SHA.match(sha):
            raise ValueError(f"not a sha256 digest: {sha!r}")
        return self.root / sha[:2] / sha

    def put(self, data: bytes) -> str:
        """Store `data` (blocking; call it off the event loop for large files)."""
        sha = hashlib.sha256(data).hexdigest()
        path = self.path(sha)
        if path.exists():
            # Fresh mtime: the sweeper spares young unreferenced files (see `collect`).
            os.utime(path)
            return sha
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f"{sha}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return sha

    def read(self, sha: str) -> bytes:
        """The bytes of a stored file (blocking)."""
        return self.path(sha).read_bytes()

    def exists(self, sha: str) -> bool:
        """Whether the file is present."""
        return self.path(sha).exists()

    def collect(self, keep: Iterable[str], older_than: float) -> int:
        """Delete files not in `keep` last touched before `older_than`; return how many.

        The age test protects a file written for a job whose row is not in the database
        yet; anything else unreferenced (a crash between the two) goes on a later sweep.
        """
        keep_set = set(keep)
        removed = 0
        for sub in self.root.iterdir():
            if not sub.is_dir():
                continue
            for path in sub.iterdir():
                if path.name in keep_set:
                    continue
                try:
                    if path.stat().st_mtime < older_than:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed
