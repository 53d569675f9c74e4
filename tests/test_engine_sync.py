"""The Gatys loop never waits for the device: values are read off it only for the progress
reports and previews asked for, and L-BFGS makes torch's steps without reading anything.

On a CPU nothing waits, so the reads are counted instead: a `TorchFunctionMode` sees every
conversion of a tensor to a Python value (`float`, `bool`, `.item()`, `.tolist()`,
`.numpy()`), each of which is a host synchronisation on a GPU. The meta device, whose
tensors have no values, refuses any such read outright.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

from gpu_node.engine.gatys import stylize_gatys
from gpu_node.engine.gatys_params import GatysParams
from gpu_node.engine.lbfgs import SyncFreeLBFGS
from gpu_node.engine.offload import HostCopies
from gpu_node.engine.progress import EngineProgress
from gpu_node.images import open_image, resize_long_side

DATA = Path(__file__).parent / "data"
READS = frozenset({"item", "__bool__", "__float__", "__int__", "__index__", "tolist", "numpy"})


class HostReads(TorchFunctionMode):
    """Counts the tensor-to-Python conversions made while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        if getattr(func, "__name__", "") in READS:
            self.count += 1
        return func(*args, **(kwargs or {}))


Make = Callable[[torch.Tensor], Any]


def _minimise(make: Make, steps: int, device: str = "cpu") -> torch.Tensor:
    """A convex problem (a quadratic plus a small quartic) in 40 unknowns."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(40, 40, generator=generator)
    a = (a @ a.T + 0.1 * torch.eye(40)).to(device)
    b = torch.randn(40, generator=generator).to(device)
    x = torch.zeros(40, device=device, requires_grad=True)
    optimizer = make(x)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = 0.5 * x @ a @ x - b @ x + 0.01 * (x**4).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    for _ in range(steps):
        optimizer.step(closure)
    return x.detach()


@pytest.mark.parametrize("history", [3, 100])
def test_sync_free_lbfgs_takes_torchs_steps(history: int) -> None:
    theirs = _minimise(
        lambda x: torch.optim.LBFGS([x], lr=1.0, max_iter=1, history_size=history), 60
    )
    ours = _minimise(lambda x: SyncFreeLBFGS(x, lr=1.0, history_size=history), 60)
    assert theirs.abs().max() > 1.0  # it went somewhere
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-6)


def test_sync_free_lbfgs_reads_nothing_off_the_device() -> None:
    _minimise(lambda x: SyncFreeLBFGS(x, history_size=5), 10, device="meta")
    with pytest.raises(RuntimeError, match="meta"):  # the check can fail: torch's does read
        _minimise(lambda x: torch.optim.LBFGS([x], max_iter=1, history_size=5), 3, "meta")


def test_gatys_reads_the_device_only_for_reports_previews_and_the_result() -> None:
    content = resize_long_side(open_image(DATA / "cat.jpg"), 32)
    style = resize_long_side(open_image(DATA / "starry_night.jpg"), 32)
    params = GatysParams(size=32, epochs=12, max_epochs=12, preview_every=6)
    reports: list[EngineProgress] = []
    previews: list[int] = []
    with HostReads() as reads:
        stylize_gatys(
            content,
            [(style, 1.0)],
            params,
            progress=reports.append,
            preview=lambda image, epoch: previews.append(epoch),
            progress_every=4,
        )
    assert [r.epoch for r in reports] == [4, 8, 12] and previews == [6, 12]
    assert reports[-1].losses["total"] < reports[0].losses["total"]
    # one read per report (its losses), per preview (its pixels), and the final picture
    assert reads.count == len(reports) + len(previews) + 1


def test_host_copies_are_snapshots_handed_back_in_order() -> None:
    copies: HostCopies[int] = HostCopies(torch.device("cpu"))
    picture = torch.zeros(2, 3)
    copies.start(picture, 1)
    picture.add_(5.0)  # the optimiser goes on changing the picture in place
    copies.start(picture, 2)
    landed = copies.arrived()
    assert [tag for tag, _ in landed] == [1, 2]
    assert landed[0][1].sum() == 0 and landed[1][1].sum() == 30
    assert copies.arrived() == [] and copies.wait() == [] and len(copies) == 0


def _cuda_syncs(epochs: int) -> int:
    """How many synchronising CUDA calls one small Gatys job makes (torch warns of each)."""
    content = resize_long_side(open_image(DATA / "cat.jpg"), 64)
    style = resize_long_side(open_image(DATA / "starry_night.jpg"), 64)
    params = GatysParams(size=64, epochs=epochs, max_epochs=epochs, preview_every=2)
    reports: list[EngineProgress] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            stylize_gatys(
                content,
                [(style, 1.0)],
                params,
                device=torch.device("cuda"),
                progress=reports.append,
                preview=lambda image, epoch: None,
            )
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert len(reports) == epochs  # progress every epoch, all of it delivered
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_synchronising_calls_do_not_grow_with_the_epochs() -> None:
    # Setting up and finishing a job synchronise a fixed number of times; the loop, with
    # progress every epoch and a preview every other one, not once.
    _cuda_syncs(2)  # first-call set-up (cuDNN's autotuner) out of the way
    assert _cuda_syncs(16) == _cuda_syncs(4)
