"""How long a job will take on a node, from the node's pace: the one formula of the relay,
mirrored line for line by `web/js/speed.js` (tests/test_estimates.py checks they agree).

A pace is `(seconds, seconds_per_mp)` per unit of work: per epoch for Gatys, per job for
one-pass methods. A node measures it at start-up (`protocol.Pace`); the relay corrects it
with each finished Gatys job (`refined`).
"""

from __future__ import annotations

from collections.abc import Mapping

from protocol import GATYS_START_EPOCHS

PaceTable = Mapping[str, tuple[float, float]]
"""A node's pace by method: (seconds, seconds per megapixel) per unit of work."""

# A finished job's pace counts this much against what was believed before; the first one
# replaces the start-up warm-up's guess outright, since a real job is the better witness.
REFINE_WEIGHT = 0.5


def units(method: str, epochs: int) -> float:
    """The units of work of a job: epochs (plus the start-up's) for Gatys, else one."""
    return epochs + GATYS_START_EPOCHS if method == "gatys" else 1.0


def job_seconds(pace: tuple[float, float], method: str, epochs: int, pixels: int) -> float:
    """Seconds a job of `method`, `epochs` and `pixels` takes at `pace`."""
    seconds, per_mp = pace
    return units(method, epochs) * (seconds + per_mp * pixels / 1e6)


def refined(
    pace: tuple[float, float], method: str, epochs: int, pixels: int, *, took: float, first: bool
) -> tuple[float, float]:
    """The pace after a job that took `took` seconds: scaled towards what it showed."""
    expected = job_seconds(pace, method, epochs, pixels)
    if expected <= 0 or took <= 0:
        return pace
    ratio = took / expected
    factor = ratio if first else 1.0 + REFINE_WEIGHT * (ratio - 1.0)
    return pace[0] * factor, pace[1] * factor


def wait_seconds(running_left: list[float], ahead: list[float], slots: int) -> float:
    """Seconds until a queued job starts: the work still running and queued before it,
    shared among the `slots` that could take it."""
    return (sum(max(0.0, s) for s in running_left) + sum(ahead)) / max(1, slots)
