"""The owner's `--precision` and `--compile`: parsed and checked, turned into the speed
settings a device can take (CUDA only, with a log line for what a device cannot take),
falling back cleanly when compiling fails, and leaving CPU outputs exactly as they were."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from gpu_node.daemon.config import ConfigError, NodeConfig, add_arguments, from_args
from gpu_node.device import compiled, configure_backend, fast_paths, node_paths
from gpu_node.engine.gatys import stylize_gatys
from gpu_node.engine.gatys_params import GatysParams
from gpu_node.images import open_image, resize_long_side
from gpu_node.precision import Precision

DATA = Path(__file__).parent / "data"
CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


def _config(argv: list[str], env: dict[str, str] | None = None) -> NodeConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_args(parser.parse_args(["--relay", "h:1", "--token", "t", *argv]), env or {})


def test_the_flags_parse_and_default_to_tf32_without_compile() -> None:
    default = _config([])
    assert default.precision is Precision.TF32 and default.compile is False
    flagged = _config(["--precision", "bf16", "--compile"])
    assert flagged.precision is Precision.BF16 and flagged.compile is True
    env = {"STYLERELAY_NODE_PRECISION": "FP32", "STYLERELAY_NODE_COMPILE": "yes"}
    from_env = _config([], env)
    assert from_env.precision is Precision.FP32 and from_env.compile is True
    assert _config(["--precision", "tf32"], env).precision is Precision.TF32  # flag wins


def test_unknown_precisions_are_refused() -> None:
    with pytest.raises(ConfigError, match="fp32, tf32, bf16"):
        _config([], {"STYLERELAY_NODE_PRECISION": "fp8"})
    with pytest.raises(SystemExit):
        _config(["--precision", "half"])


@pytest.mark.parametrize(
    ("precision", "tf32", "bf16"),
    [(Precision.FP32, False, False), (Precision.TF32, True, False), (Precision.BF16, True, True)],
)
def test_cuda_gets_what_the_precision_asks(precision: Precision, tf32: bool, bf16: bool) -> None:
    paths = node_paths(CUDA, precision, compile=True)
    assert (paths.tf32, paths.bf16, paths.compile) == (tf32, bf16, True)
    assert paths.channels_last and paths.cudnn_benchmark


def test_other_devices_take_none_of_it_and_say_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gpu_node.device"):
        paths = node_paths(CPU, Precision.BF16, compile=True)
    assert paths == fast_paths(CPU) and not any(vars(paths).values())
    assert "runs plain float32" in caplog.text and "runs eagerly" in caplog.text


@pytest.fixture
def tf32_switches() -> Iterator[None]:
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    threads = torch.get_num_threads()
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("tf32_switches")
def test_fp32_turns_tf32_off_on_cuda_and_tf32_on() -> None:
    # torch's switches are process-wide flags; setting them needs no GPU
    threads = torch.get_num_threads()
    configure_backend(CUDA, threads=threads, paths=node_paths(CUDA, Precision.TF32, False))
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    configure_backend(CUDA, threads=threads, paths=node_paths(CUDA, Precision.FP32, False))
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


def _double(x: torch.Tensor) -> torch.Tensor:
    return x * 2


def _refusing(fn: Callable[..., Any]) -> Callable[..., Any]:
    raise RuntimeError("no compiler toolchain here")


def _failing_on_call(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("unsupported op in the graph")

    return call


@pytest.mark.parametrize("compiler", [_refusing, _failing_on_call])
def test_a_failing_compile_falls_back_to_eager_for_good(
    compiler: Callable[[Callable[..., Any]], Callable[..., Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    paths = fast_paths(CUDA, compile=True)
    with caplog.at_level(logging.WARNING, logger="gpu_node.device"):
        fn = compiled(_double, paths, compiler=compiler)
        outs = [fn(torch.ones(2)) for _ in range(3)]
    assert all(torch.equal(out, torch.full((2,), 2.0)) for out in outs)
    assert caplog.text.count("running eagerly") == 1


def test_a_working_compile_is_used() -> None:
    calls: list[int] = []

    def counting(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            calls.append(1)
            return fn(*args)

        return call

    fn = compiled(_double, fast_paths(CUDA, compile=True), compiler=counting)
    assert torch.equal(fn(torch.ones(1)), torch.full((1,), 2.0)) and calls == [1]
    assert compiled(_double, fast_paths(CPU, compile=True), compiler=counting) is _double


def test_on_the_cpu_every_flag_leaves_the_picture_exactly_as_it_was() -> None:
    content = resize_long_side(open_image(DATA / "cat.jpg"), 32)
    style = resize_long_side(open_image(DATA / "starry_night.jpg"), 32)
    params = GatysParams(size=32, epochs=4, max_epochs=4)
    plain = stylize_gatys(content, [(style, 1.0)], params, paths=fast_paths(CPU))
    flagged = stylize_gatys(
        content, [(style, 1.0)], params, paths=node_paths(CPU, Precision.BF16, compile=True)
    )
    assert np.array_equal(np.asarray(plain), np.asarray(flagged))
