"""Choosing the torch device a job runs on, and setting torch up for it.

`pick_device` prefers CUDA, then Apple MPS, then the CPU, unless one is asked for by name.
`configure_backend` applies the speed settings that suit the device; torch keeps these
process-wide, so they are set once by the entry point (the CLI or the daemon), not by
the engines. `node_paths` turns the owner's `--precision` and `--compile` into the
settings a device can take, saying in the log what it cannot; `resolve_devices` reads a
list of devices (`cuda:0,cuda:1`, `all`) for a daemon that drives several.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from gpu_node.errors import BadInputError
from gpu_node.precision import Precision

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FastPaths:
    """The speed settings a device gets; on anything but CUDA all are off (a no-op)."""

    channels_last: bool
    """Feature maps in NHWC, which cuDNN's tensor-core kernels prefer."""
    cudnn_benchmark: bool
    """Let cuDNN time its algorithms for each new shape and keep the fastest."""
    tf32: bool
    """TF32 matrix maths: style losses keep their quality at its 10-bit mantissa."""
    bf16: bool
    """Forward passes under bfloat16 autocast (asked for; outputs checked by bench/gpu.py)."""
    compile: bool
    """`torch.compile` the networks (asked for), falling back to eager if it fails."""


def fast_paths(
    device: str | torch.device, *, bf16: bool = False, compile: bool = False, tf32: bool = True
) -> FastPaths:
    """The settings for `device`: CUDA gets the fast paths, every other device none."""
    cuda = torch.device(device).type == "cuda"
    return FastPaths(
        channels_last=cuda,
        cudnn_benchmark=cuda,
        tf32=tf32 and cuda,
        bf16=bf16 and cuda,
        compile=compile and cuda,
    )


def node_paths(device: torch.device, precision: Precision, compile: bool) -> FastPaths:
    """The settings for the owner's `--precision` and `--compile` on `device`; what the
    device cannot take is logged and left off (only CUDA has TF32, bf16 and compile here),
    so the same flags run everywhere."""
    paths = fast_paths(
        device,
        bf16=precision is Precision.BF16,
        compile=compile,
        tf32=precision is not Precision.FP32,
    )
    if precision is not Precision.FP32 and device.type != "cuda":
        log.info("--precision %s: %s runs plain float32", precision.value, device)
    if compile and not paths.compile:
        log.info("--compile: only CUDA devices are compiled; %s runs eagerly", device)
    return paths


def autocast(device: torch.device, paths: FastPaths) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast when `paths` asks for it, else a context that does nothing."""
    if paths.bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


Compiler = Callable[[Callable[..., Any]], Callable[..., Any]]
"""What `compiled` compiles with: `torch.compile` unless a test gives another."""


def _torch_compile(fn: Callable[..., Any]) -> Callable[..., Any]:
    return torch.compile(fn, dynamic=False)


def compiled(
    fn: Callable[..., Any], paths: FastPaths, *, compiler: Compiler = _torch_compile
) -> Callable[..., Any]:
    """`fn` through `torch.compile` when asked, falling back to `fn` itself for good on the
    first failure (no compiler toolchain, an unsupported op): speed is optional, results not.
    """
    if not paths.compile:
        return fn
    try:
        fast = compiler(fn)
    except Exception as exc:  # e.g. torch built without dynamo on this platform
        log.warning("torch.compile unavailable (%s); running eagerly", exc)
        return fn
    broken = False

    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal broken
        if not broken:
            try:
                return fast(*args, **kwargs)
            except Exception as exc:  # compile errors surface on the first call
                broken = True
                log.warning("torch.compile failed (%s); running eagerly from now on", exc)
        return fn(*args, **kwargs)

    return call


@dataclass(frozen=True)
class BackendConfig:
    """The torch settings applied for a device."""

    device: torch.device
    threads: int
    tf32: bool
    paths: FastPaths


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Names of the devices this process can use, best first."""
    names: list[str] = []
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    names.append("cpu")
    return names


def resolve_device(requested: str | None) -> torch.device:
    """The device named by `requested` ("auto"/None picks the best), or BadInputError."""
    if requested is None or requested in ("", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise BadInputError(
            f"unknown device {requested!r}; use one of: auto, {', '.join(available_devices())}"
        ) from None
    match device.type:
        case "cpu":
            return device
        case "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            index = 0 if device.index is None else device.index
            if index >= count:
                raise BadInputError(
                    f"device {requested!r} is not available here "
                    f"({count} CUDA device(s)); use one of: {', '.join(available_devices())}"
                )
            return torch.device("cuda", index)
        case "mps":
            if not _mps_available():
                raise BadInputError(
                    f"device {requested!r} is not available here; "
                    f"use one of: {', '.join(available_devices())}"
                )
            return device
        case _:
            raise BadInputError(
                f"device type {device.type!r} is not supported; "
                f"use one of: auto, {', '.join(available_devices())}"
            )


def configure_backend(
    device: torch.device, *, threads: int | None = None, paths: FastPaths | None = None
) -> BackendConfig:
    """Apply the speed settings for `device` (see `fast_paths`) and return what was set.

    The process-wide torch switches are only set for CUDA (TF32 on, or off for
    `--precision fp32`), so the CPU path computes exactly what it did; the CPU gets one
    thread per core unless `threads` says otherwise.
    """
    paths = paths if paths is not None else fast_paths(device)
    cores = threads if threads is not None else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = paths.tf32
        torch.backends.cudnn.allow_tf32 = paths.tf32
    if paths.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    return BackendConfig(
        device=device, threads=torch.get_num_threads(), tf32=paths.tf32, paths=paths
    )


ALL_DEVICES = "all"
"""`--device all`: every CUDA device of the machine (or the best device if it has none)."""


def resolve_devices(requested: str | None) -> list[torch.device]:
    """The devices of a comma-separated list (`cuda:0,cuda:1`, `cpu,cpu`), or every CUDA
    device for `all`; one entry per lane of work, so a name may repeat. BadInputError for
    an empty entry or one that `resolve_device` refuses."""
    text = (requested or "").strip()
    if text == ALL_DEVICES:
        if torch.cuda.is_available() and torch.cuda.device_count() > 0:
            return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        device = resolve_device(None)
        log.info("--device all: no CUDA device here; using %s", device)
        return [device]
    names = [name.strip() for name in text.split(",")] if text else ["auto"]
    if any(not name for name in names):
        raise BadInputError(f"--device {requested!r} has an empty entry; e.g. cuda:0,cuda:1")
    return [resolve_device(name) for name in names]


def pick_device(requested: str | None = None) -> torch.device:
    """Resolve `requested` (None: CUDA, then MPS, then CPU) and configure torch for it."""
    device = resolve_device(requested)
    configure_backend(device)
    return device
