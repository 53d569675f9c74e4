"""Copying tensors off the device without waiting for it.

An engine that wants a preview or its loss values mid-job hands the device tensor to
`HostCopies.start`: on CUDA the copy is queued behind the work already queued (into pinned
memory, with an event recorded after it) and the engine goes on queueing work; `arrived`
later hands back the copies whose events have fired, never blocking. On other devices a
copy is made at once and arrives at the next `arrived`, so one code path serves both.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

import torch

T = TypeVar("T")  # what the caller tags a copy with


class HostCopies(Generic[T]):
    """Copies of device tensors on their way to host memory, oldest first."""

    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == "cuda"
        self._pending: deque[tuple[T, torch.Tensor, torch.cuda.Event | None]] = deque()

    def __len__(self) -> int:
        return len(self._pending)

    def start(self, tensor: torch.Tensor, tag: T) -> None:
        """Begin copying `tensor` (as it is now, in queue order) to the host."""
        tensor = tensor.detach()
        if not self._cuda:
            self._pending.append((tag, tensor.to("cpu", copy=True), None))
            return
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        host.copy_(tensor, non_blocking=True)
        event = torch.cuda.Event()  # type: ignore[no-untyped-call]
        event.record(torch.cuda.current_stream(tensor.device))
        self._pending.append((tag, host, event))

    def arrived(self) -> list[tuple[T, torch.Tensor]]:
        """The copies that have landed, in order; none of them waits for the device."""
        done: list[tuple[T, torch.Tensor]] = []
        while self._pending:
            tag, host, event = self._pending[0]
            if event is not None and not event.query():  # type: ignore[no-untyped-call]
                break
            self._pending.popleft()
            done.append((tag, host))
        return done

    def wait(self) -> list[tuple[T, torch.Tensor]]:
        """Every copy still on its way, waiting for each (at the end of a job's scale)."""
        done: list[tuple[T, torch.Tensor]] = []
        while self._pending:
            tag, host, event = self._pending.popleft()
            if event is not None:
                event.synchronize()
            done.append((tag, host))
        return done
