"""Priority earned with GPU time: the work each node did recently, and the extra turns in the
queue it buys the API key linked to that node (`python -m relay keys add NAME --node NODE`).

Work is counted in megapixel-epochs of finished jobs (a one-pass job is one epoch), over the
jobs the relay still keeps (`--result-ttl`): rebuilt from the store at start-up, added to as
jobs finish, taken off as they expire. A linked key gets, on top of its own `--priority`,
up to `MAX_TURNS` extra jobs per round-robin turn in proportion to its node's share of all
the work done; anonymous clients keep their one job a turn, so what they lose is bounded by
that share.
"""

from relay.model import JobRecord, JobState

MAX_TURNS = 4
"""Extra jobs per turn for a key whose node did all the recent work."""


def work_of(job: JobRecord) -> float:
    """Megapixel-epochs of a finished job (0 for any other)."""
    if job.state is not JobState.DONE or job.node is None:
        return 0.0
    return max(1, job.epochs) * job.pixels / 1e6


class WorkLedger:
    """Work done per node over the jobs still kept."""

    def __init__(self) -> None:
        self._work: dict[str, float] = {}

    def credit(self, job: JobRecord) -> None:
        """A job finished (or was found finished at start-up) on its node."""
        if job.node is not None and (work := work_of(job)) > 0:
            self._work[job.node] = self._work.get(job.node, 0.0) + work

    def debit(self, job: JobRecord) -> None:
        """A finished job expired: its work no longer counts."""
        if job.node is not None and (work := work_of(job)) > 0:
            left = self._work.get(job.node, 0.0) - work
            if left > 1e-9:
                self._work[job.node] = left
            else:
                self._work.pop(job.node, None)

    def work(self, node: str) -> float:
        """The node's megapixel-epochs over the jobs still kept."""
        return self._work.get(node, 0.0)

    def share(self, node: str) -> float:
        """The node's part of all the work done, 0..1."""
        total = sum(self._work.values())
        return self._work.get(node, 0.0) / total if total > 0 else 0.0

    def bonus(self, node: str | None) -> int:
        """Extra turns earned for the key linked to `node`."""
        return 0 if node is None else round(MAX_TURNS * self.share(node))
