"""The JSON shapes the API and the WebSocket send: a job's public view, its events, a
node's view. The job service (`relay.jobs`) keeps state; this is where it is shaped."""

from collections.abc import Callable, Mapping
from typing import Any

from relay.checkpoints import partial_view
from relay.events import Event
from relay.hub import NodeHub
from relay.jobs import JobService
from relay.model import JobRecord, JobState, Live, iso, job_url
from relay.scheduler import NodeView


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
        # The planned count (never a cap): as the node's progress says, else as asked.
        "epochs": (live.epochs if live and live.epochs else job.epochs),
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


def public_job(service: JobService, job: JobRecord, sharing: Mapping[str, Any]) -> dict[str, Any]:
    """The job's public state as JSON: its view with its place in the queue, its e-mail's
    status, when it should start, and its place in the gallery (`sharing`: what
    `relay.showcase.Gallery.state` says, read by the async caller)."""
    view = job_view(
        job,
        live=service.live.get(job.id),
        position=service.position_of(job),
        reason=service.scheduler.why_waiting(job.id),
        ttl=service.config.result_ttl,
    )
    view["email_status"] = service.email_status(job)
    view["starts_in"] = service.starts_in(job.id)
    view.update(sharing)
    return view


def event_json(service: JobService, event: Event, sharing: Mapping[str, Any]) -> Mapping[str, Any]:
    """A job event as the WebSocket sends it: an ended job's record (with what it had
    reported, `live`) becomes its public view, with its place in the gallery (`sharing`,
    as for `public_job`); other events are JSON already."""
    job = event.get("job")
    if not isinstance(job, JobRecord):
        return event
    view = job_view(job, live=event.get("live"), ttl=service.config.result_ttl)
    view.update(sharing)
    return {**{k: v for k, v in event.items() if k != "live"}, "job": view}


def node_list(service: JobService) -> list[dict[str, Any]]:
    """The service's connected nodes as public JSON (`node_views`)."""
    nodes = service.scheduler.nodes()
    views = node_views(service.hub, nodes, service.timer(), service.kudos.work)
    return views + service.other_node_views()


def node_views(
    hub: NodeHub, nodes: list[NodeView], now: float, work: Callable[[str], float]
) -> list[dict[str, Any]]:
    """Connected nodes as public JSON: no tokens, no job ids beyond a short tag. `nodes` is
    the scheduler's view of them, `now` its timer's time, `work` a node's kudos."""
    out = []
    for view in nodes:
        handle = hub.get(view.info.name)
        if handle is None:
            continue
        info = view.info
        pace = hub.pace_view(info.name)
        left = view.paused_until - now if view.paused_until is not None else 0.0
        paused = left > 0
        if paused:
            state = "paused"
        else:
            state = "draining" if view.draining else "busy" if view.jobs else "idle"
        out.append(
            {
                "name": info.name,
                "device": info.device_name,
                "memory": info.device_memory,
                # Each of its devices; a node that lists none is its one device.
                "devices": [
                    {"name": name, "memory": memory, "slots": slots}
                    for name, memory, slots in info.devices
                    or ((info.device_name, info.device_memory, info.slots),)
                ],
                "methods": sorted(info.methods),
                "styles": sorted("fast:" + s for s in info.styles),
                "max_epochs": info.max_epochs,
                "max_pixels": info.max_pixels,
                "slots": info.slots,
                "state": state,
                # Rested after failing jobs that ran elsewhere: why, and seconds left.
                "paused": paused,
                "pause_reason": view.pause_reason if paused else None,
                "paused_for": round(left) if paused else None,
                # Not yet trusted: it has finished no job (one at a time meanwhile).
                "probation": not view.proven,
                "busy_slots": len(view.jobs),
                # A short tag, not the id: a job id is the key to its result.
                "current_jobs": sorted(j[:6] for j in view.jobs),
                "jobs_done": view.jobs_done,
                # For the page's time estimates (relay/estimates.py, web/js/speed.js).
                "pace": pace,
                # Megapixel-epochs of its finished jobs still kept: its kudos.
                "work_done": round(work(info.name), 3),
                "seconds_per_epoch_mp": pace.get("gatys", {}).get("seconds_per_mp"),
                "connected_since": iso(handle.connected_since),
                "last_seen": iso(handle.last_seen),
            }
        )
    return out
