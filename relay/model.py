"""The job as the relay keeps it: states, style choices and the persisted record."""

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

METHODS = ("gatys", "fast", "arbitrary")
"""Every style method a node may offer; anything else is refused as unknown."""


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
    """pending / sent / failed once the job ended with an address and mail is set up."""

    @property
    def pixels(self) -> int:
        """Pixels of the output image."""
        return self.width * self.height

    def files(self) -> list[str]:
        """Every stored file this job refers to."""
        refs = [self.content_file, *self.style_files, self.result_file, self.preview_file]
        return [ref for ref in refs if ref]
