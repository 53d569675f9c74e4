"""Which stored files each job keeps, and so what each client holds on the relay's disk.

A job keeps files while it may still need or show them:

- queued or running: its inputs (the photo and the style images sent to the node);
- done: its inputs too (the page shows them beside the result), its result and preview,
  until the result expires (`--result-ttl`);
- failed or cancelled: only the painting so far (its latest checkpoint, `relay.checkpoints`),
  until it expires like a result. The API stops serving their inputs at once, and the next
  sweep deletes the files unless another live job shares them.

Files are content-addressed and shared between jobs (a gallery painting prepared at one
size is one file for every job that uses it), so a file is live while any job keeps it,
and a client is charged once for each distinct file its jobs keep.

Items of the public gallery (`relay.showcase`) keep their files the same way, charged to
the gallery rather than to a client, so a shared result outlives its job's TTL and still
counts in the disk cap.
"""

from collections import Counter
from collections.abc import Callable, Iterable

from relay.blobs import BlobStore
from relay.config import Config
from relay.errors import InsufficientStorage, TooManyRequests
from relay.model import JobRecord, JobState
from relay.store import JobStore

MB = 1024 * 1024
GB = 1024 * MB
DISK_FULL = (
    "The relay's disk is full; it cannot take new jobs now. Try again later; "
    "results already made can still be downloaded."
)
_KEEPS_INPUTS = frozenset({JobState.QUEUED, JobState.RUNNING, JobState.DONE})


def kept_files(job: JobRecord) -> frozenset[str]:
    """The stored files this job keeps in its present state."""
    if job.state not in _KEEPS_INPUTS:
        return frozenset(f for f in (job.partial_file,) if f)
    if job.state is JobState.DONE:  # the result supersedes the checkpoint
        done = (job.content_file, *job.style_files, job.result_file, job.preview_file)
        return frozenset(f for f in done if f)
    return frozenset(job.files())


class DiskUsage:
    """The files live jobs keep (a container of digests, for `BlobStore.collect`) and the
    bytes each client holds (for its quota), kept up to date as jobs change."""

    def __init__(self) -> None:
        self._jobs: dict[str, tuple[str, frozenset[str]]] = {}
        self._live: Counter[str] = Counter()
        self._clients: dict[str, Counter[str]] = {}
        self._bytes: Counter[str] = Counter()
        self._sizes: dict[str, int] = {}

    def __contains__(self, sha: object) -> bool:
        return sha in self._live

    def refer(self, job: JobRecord, size: Callable[[str], int]) -> None:
        """The job is new or changed: count the files it keeps now (`size` of each)."""
        self.hold(job.id, job.client, kept_files(job), size)

    def hold(self, key: str, owner: str, shas: Iterable[str], size: Callable[[str], int]) -> None:
        """Keep these files for `key` (a job id, or another keeper such as a gallery item,
        see `relay.showcase`), charged to `owner`, instead of what `key` kept before."""
        old = self._jobs.get(key, (owner, frozenset()))[1]
        new = frozenset(shas)
        self._jobs[key] = (owner, new)
        for sha in new - old:
            self._sizes.setdefault(sha, size(sha))
            self._add(owner, sha)
        for sha in old - new:
            self._drop(owner, sha)
        if not new:
            del self._jobs[key]

    def forget(self, job_id: str) -> None:
        """The job (or other keeper) was deleted."""
        client, files = self._jobs.pop(job_id, ("", frozenset()))
        for sha in files:
            self._drop(client, sha)

    def client_bytes(self, client: str) -> int:
        """Bytes of the distinct files the client's jobs keep."""
        return self._bytes[client]

    def extra_bytes(self, client: str, shas: Iterable[str], size: Callable[[str], int]) -> int:
        """Bytes these files would add to what the client holds (its own files are free)."""
        mine = self._clients.get(client, Counter())
        return sum(size(sha) for sha in set(shas) if sha not in mine)

    def _add(self, client: str, sha: str) -> None:
        self._live[sha] += 1
        mine = self._clients.setdefault(client, Counter())
        mine[sha] += 1
        if mine[sha] == 1:
            self._bytes[client] += self._sizes[sha]

    def _drop(self, client: str, sha: str) -> None:
        mine = self._clients[client]
        mine[sha] -= 1
        if not mine[sha]:
            del mine[sha]
            self._bytes[client] -= self._sizes[sha]
            if not mine:
                del self._clients[client]
                del self._bytes[client]
        self._live[sha] -= 1
        if not self._live[sha]:
            del self._live[sha]
            del self._sizes[sha]


class Disk:
    """The data dir's limits, checked without walking it: a cap on what it holds (507)
    and a quota on what each client's jobs keep (429: it is that client's to free)."""

    def __init__(self, config: Config, blobs: BlobStore, store: JobStore) -> None:
        self.config = config
        self.blobs = blobs
        self.store = store
        self.usage = DiskUsage()

    def stored_bytes(self) -> int:
        """Bytes the data dir holds: the files (sizes kept by the blob store) and the database."""
        db = self.store.path
        total = self.blobs.total
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            try:
                total += path.stat().st_size
            except OSError:
                continue
        return total

    def state(self) -> str:
        """ "full" while writes fail (for want of space, mostly) or the data dir is at its
        cap, else "ok"."""
        failed = self.blobs.failing is not None or self.store.failing is not None
        at_cap = self.stored_bytes() >= self.config.max_disk_gb * GB
        return "full" if failed or at_cap else "ok"

    def check(self, client: str, incoming: int) -> None:
        """Refuse a job of `incoming` bytes when the data dir would pass its cap (507), or
        when the client already holds its quota (429; `check_quota` is exact)."""
        if self.stored_bytes() + incoming > self.config.max_disk_gb * GB:
            raise InsufficientStorage(
                f"The relay holds as much as it may ({self.config.max_disk_gb:g} GB); it "
                "cannot take new jobs until older results expire. Results already made can "
                "still be downloaded."
            )
        self.check_quota(client, ())

    def check_quota(self, client: str, shas: Iterable[str]) -> None:
        """Refuse (429) a job whose files would take the client past its quota."""
        quota = self.config.client_quota_mb
        held = self.usage.client_bytes(client)
        extra = self.usage.extra_bytes(client, shas, self.blobs.size)
        if held >= quota * MB or held + extra > quota * MB:
            needs = f" and this one needs {extra / MB:.1f} MB more" if extra else ""
            raise TooManyRequests(
                f"Your jobs already keep {held / MB:.1f} MB of images on the relay{needs}; "
                f"the limit is {quota:g} MB per client. Cancel a waiting job, or wait until "
                "older results expire."
            )
