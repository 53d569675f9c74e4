"""The JSON shapes the API and the WebSocket send: a job's public view, a node's view."""

import time
from typing import Any

from relay.checkpoints import partial_view
from relay.model import JobRecord, JobState, Live


def iso(stamp: float | None) -> str | None:
    """A Unix time as ISO 8601 UTC (`2026-11-23T11:30:00Z`), or None."""
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def job_url(job_id: str, tail: str = "") -> str:
    """The API path of a job, or of one of its sub-resources."""
    return f"/api/jobs/{job_id}{tail}"


def job_view(
    job: JobRecord,
    *,
    live: "Live | None" = None,
    position: int | None = None,
    reason: str | None = None,
    ttl: float | None = None,
) -> dict[str, Any]:
    """Everything a client may know about a job (no client key, no e-mail address)."""
    has_preview = (live is not None and live.preview is not None) or job.preview_file is not None
    return {
        "id": job.id,
        "state": str(job.state),
        "method": job.method,
        "styles": [{"id": s.id, "weight": s.weight} for s in job.styles],
        "params": dict(job.params),
        "width": job.width,
        "height": job.height,
        "position": position,
        "waiting_reason": reason,
        "epoch": live.epoch if live else None,
        "max_epochs": (live.max_epochs if live and live.max_epochs else job.epochs),
        "losses": live.losses if live else None,
        "node": job.node,
        "attempts": job.attempts,
        "created": iso(job.created),
        "started": iso(job.started),
        "finished": iso(job.finished),
        "expires": iso(job.finished + ttl) if job.finished is not None and ttl else None,
        "error": job.error,
        "filename": job.filename,
        "events_url": job_url(job.id, "/events"),
        "content_url": job_url(job.id, "/content"),
        "style_urls": [job_url(job.id, f"/style/{i}") for i in range(len(job.style_files))],
        "result_url": job_url(job.id, "/result") if job.state is JobState.DONE else None,
        "preview_url": job_url(job.id, "/preview") if has_preview else None,
        "partial": partial_view(job, job_url(job.id, "/partial")),
    }
