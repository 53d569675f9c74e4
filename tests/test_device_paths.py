"""The CUDA fast paths are chosen for CUDA only, and leave the CPU path as it was."""

import torch

from gpu_node.device import autocast, compiled, configure_backend, fast_paths


def test_cuda_gets_every_fast_path_and_the_cpu_none() -> None:
    cuda = fast_paths("cuda:1", bf16=True, compile=True)
    assert cuda.channels_last and cuda.cudnn_benchmark and cuda.tf32 and cuda.bf16 and cuda.compile
    assert not fast_paths("cuda").bf16 and not fast_paths("cuda").compile  # both asked for
    for name in ("cpu", "mps"):
        paths = fast_paths(name, bf16=True, compile=True)
        assert not any(vars(paths).values())


def test_on_the_cpu_the_settings_change_nothing() -> None:
    before = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32)
    threads = torch.get_num_threads()
    try:
        config = configure_backend(torch.device("cpu"), threads=1)
    finally:
        torch.set_num_threads(threads)
    assert not config.tf32 and config.paths == fast_paths("cpu")
    assert (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32) == before
    paths = fast_paths("cpu", bf16=True, compile=True)
    with autocast(torch.device("cpu"), paths):
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == torch.float32

    def double(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    assert compiled(double, paths) is double
