"""The job as the relay keeps it: states, style choices, the order it is made from, the
persisted record, and what a running job has reported so far (memory only)."""

import enum
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from relay.dispatch import JobTicket

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class JobState(enum.StrEnum):
    """Where a job is in its life; the last three are final."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """Whether the job will not change any more."""
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class StyleChoice:
    """One style of a job and its blend weight: `painting:NAME`, `fast:NAME` or `upload`."""

    id: str
    weight: float = 1.0


@dataclass(frozen=True)
class PreparedImage:
    """An image ready for a node: upright RGB PNG bytes at the job's size."""

    png: bytes
    width: int
    height: int


@dataclass(frozen=True)
class Order:
    """A checked job request, images already prepared at the job's size (`relay.orders`)."""

    method: str
    styles: tuple[StyleChoice, ...]
    content: PreparedImage
    style_images: tuple[PreparedImage, ...]
    epochs: int
    params: dict[str, Any] = field(default_factory=dict)
    email: str | None = None
    filename: str | None = None
    share: bool = False
    share_style: bool = False


@dataclass(frozen=True)
class JobRecord:
    """Everything the relay stores about a job (one SQLite row)."""

    id: str
    client: str
    method: str
    styles: tuple[StyleChoice, ...]
    # Prepared style images sent to the node, in the order of `styles` (none for `fast`).
    style_files: tuple[str, ...]
    content_file: str
    width: int
    height: int
    epochs: int
    params: Mapping[str, Any] = field(default_factory=dict)
    email: str | None = None
    filename: str | None = None
    state: JobState = JobState.QUEUED
    attempts: int = 0
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    node: str | None = None
    error: str | None = None
    result_file: str | None = None
    preview_file: str | None = None
    email_status: str | None = None
    """pending / sent / failed / limited once the job ended with an address and mail is
    set up (`relay.mailer.EmailStatus`)."""
    partial_file: str | None = None
    """The latest checkpoint a node sent (a PNG at the job's size; `relay.checkpoints`)."""
    partial_epoch: int | None = None
    """The epoch that checkpoint reached."""

    @property
    def pixels(self) -> int:
        """Pixels of the output image."""
        return self.width * self.height

    def files(self) -> list[str]:
        """Every stored file this job refers to."""
        refs = [self.content_file, *self.style_files, self.result_file, self.preview_file]
        refs.append(self.partial_file)
        return [ref for ref in refs if ref]


@dataclass
class Live:
    """What a running job has reported so far (kept in memory, not in the database)."""

    node: str
    epoch: int | None = None
    epochs: int | None = None
    """The epochs the node plans for the job, as its progress said."""
    losses: dict[str, float] | None = None
    preview: bytes | None = None
    previews: int = 0
    resumed_from: int = 0
    """The epoch this run started from (a checkpoint's; 0 for a fresh start)."""


def result_name(job_id: str, filename: str | None) -> str:
    """The file name of a job's result, as downloaded and as attached to its e-mail.

    `filename` is whatever the person sent: only letters, digits and `._-` of its stem are
    kept, so the name is safe in any header (no quotes, no line breaks) and on any disk.
    """
    stem = _UNSAFE_NAME.sub("_", (filename or "").rsplit(".", 1)[0]).strip("._-")[:80]
    return f"{stem or 'stylerelay-' + job_id[:8]}-stylized.png"


def fast_styles(styles: Iterable[StyleChoice]) -> frozenset[str]:
    """The bare names of the fast styles among `styles` (`fast:candy` -> `candy`)."""
    return frozenset(s.id.removeprefix("fast:") for s in styles if s.id.startswith("fast:"))


def ticket_of(job: JobRecord) -> JobTicket:
    """What the scheduler needs of a stored job."""
    return JobTicket(
        job.id, job.client, job.method, job.epochs, job.pixels, fast_styles(job.styles)
    )


def iso(stamp: float | None) -> str | None:
    """A Unix time as ISO 8601 UTC (`2026-11-23T11:30:00Z`), or None."""
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def job_url(job_id: str, tail: str = "") -> str:
    """The API path of a job, or of one of its sub-resources."""
    return f"/api/jobs/{job_id}{tail}"
