"""Shared bits of the fast-style tests: the bundled photos and a distance measure."""

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from gpu_node.images import open_image
from gpu_node.tensors import image_to_tensor

DATA = Path(__file__).parent / "data" / "fast"
PHOTOS = ("chelsea.png", "tubingen.png", "astronaut.png")


def photo(name: str = "chelsea.png") -> torch.Tensor:
    """A bundled test photo (about 160 px) as [1, 3, H, W] in 0..1."""
    return image_to_tensor(open_image(DATA / name))


def mad(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference of two images in 0..1."""
    return float((a.float() - b.float()).abs().mean())


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread: on a shared 2-core machine two threads mostly wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
