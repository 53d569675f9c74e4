"""Counters of the relay and `GET /metrics` in the Prometheus text format (version 0.0.4).

`Metrics` is a plain object the job service and the node listener add to; the numbers that
already live elsewhere (queue length, nodes connected, open jobs) are read at scrape time.
Written by hand: a few counters and histograms do not need a client library.
"""

import bisect
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: a fast job takes about one, a Gatys job minutes; a wait may last an hour.
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
WAIT_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)


@dataclass
class Histogram:
    """Cumulative buckets, a sum and a count, as Prometheus wants them."""

    bounds: Sequence[float]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        """Count one observation (negative values, from a clock step, count as zero)."""
        value = max(0.0, value)
        index = bisect.bisect_left(self.bounds, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[int]:
        """Observations at or below each bound."""
        out, running = [], 0
        for n in self.counts:
            running += n
            out.append(running)
        return out


@dataclass(frozen=True)
class Gauges:
    """What is read from the live relay at scrape time."""

    jobs_by_state: dict[str, int]
    queue_length: int
    nodes_connected: int
    node_slots: int
    busy_slots: int
    mail_queue: int = 0


class Metrics:
    """Everything counted since the relay started."""

    def __init__(self) -> None:
        self.jobs_finished: Counter[tuple[str, str]] = Counter()
        self.durations: dict[str, Histogram] = {}
        self.waits: dict[str, Histogram] = {}
        self.bytes_to_nodes = 0
        self.bytes_from_nodes = 0
        self.rejected: Counter[str] = Counter()
        self.node_connections: Counter[str] = Counter()
        self.mails: Counter[str] = Counter()

    def job_finished(self, method: str, state: str, run_seconds: float | None) -> None:
        """A job ended; a finished run's time counts in its method's histogram."""
        self.jobs_finished[method, state] += 1
        if run_seconds is not None and state == "done":
            self.durations.setdefault(method, Histogram(DURATION_BUCKETS)).observe(run_seconds)

    def job_started(self, method: str, waited: float) -> None:
        """A job went to a node after waiting `waited` seconds since it was created."""
        self.waits.setdefault(method, Histogram(WAIT_BUCKETS)).observe(waited)

    def upload_rejected(self, reason: str) -> None:
        """A job request was refused: bad_request, too_large, rate_limited, queue_full..."""
        self.rejected[reason] += 1

    def render(self, gauges: Gauges) -> str:
        """The exposition text."""
        out: list[str] = []
        _family(out, "stylerelay_jobs", "gauge", "Open jobs by state.")
        for state, n in sorted(gauges.jobs_by_state.items()):
            out.append(f'stylerelay_jobs{{state="{state}"}} {n}')
        _family(out, "stylerelay_jobs_finished_total", "counter", "Jobs ended since start.")
        for (method, state), n in sorted(self.jobs_finished.items()):
            out.append(f'stylerelay_jobs_finished_total{{method="{method}",state="{state}"}} {n}')
        _gauge(out, "stylerelay_queue_length", "Jobs waiting for a node.", gauges.queue_length)
        _gauge(out, "stylerelay_nodes_connected", "Nodes connected.", gauges.nodes_connected)
        _gauge(out, "stylerelay_node_slots", "Job slots of connected nodes.", gauges.node_slots)
        _gauge(out, "stylerelay_node_busy_slots", "Slots running a job.", gauges.busy_slots)
        _histograms(
            out, "stylerelay_job_duration_seconds", "Run time of done jobs.", self.durations
        )
        _histograms(out, "stylerelay_job_wait_seconds", "Time from queued to a node.", self.waits)
        _family(out, "stylerelay_node_bytes_total", "counter", "Bytes relayed to and from nodes.")
        out.append(f'stylerelay_node_bytes_total{{direction="in"}} {self.bytes_from_nodes}')
        out.append(f'stylerelay_node_bytes_total{{direction="out"}} {self.bytes_to_nodes}')
        _labelled(
            out,
            "stylerelay_uploads_rejected_total",
            "Job requests refused, by reason.",
            "reason",
            self.rejected.items(),
        )
        _labelled(
            out,
            "stylerelay_node_connections_total",
            "Node connection attempts, by outcome.",
            "outcome",
            self.node_connections.items(),
        )
        _labelled(
            out, "stylerelay_emails_total", "E-mails by outcome.", "status", self.mails.items()
        )
        _gauge(out, "stylerelay_email_queue", "E-mails waiting to be sent.", gauges.mail_queue)
        return "\n".join(out) + "\n"


def _family(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")


def _gauge(out: list[str], name: str, help_text: str, value: int) -> None:
    _family(out, name, "gauge", help_text)
    out.append(f"{name} {value}")


def _labelled(
    out: list[str], name: str, help_text: str, label: str, items: Iterable[tuple[str, int]]
) -> None:
    _family(out, name, "counter", help_text)
    for key, n in sorted(items):
        out.append(f'{name}{{{label}="{key}"}} {n}')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf"
    return f"{value:g}"


def _histograms(out: list[str], name: str, help_text: str, by: dict[str, Histogram]) -> None:
    _family(out, name, "histogram", help_text)
    for method, hist in sorted(by.items()):
        for bound, n in zip(hist.bounds, hist.cumulative(), strict=True):
            out.append(f'{name}_bucket{{method="{method}",le="{_number(bound)}"}} {n}')
        out.append(f'{name}_bucket{{method="{method}",le="+Inf"}} {hist.count}')
        out.append(f'{name}_sum{{method="{method}"}} {hist.total:.6g}')
        out.append(f'{name}_count{{method="{method}"}} {hist.count}')
