"""Device choice, tensor conversion and the progress contract shared by every engine."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from gpu_node.device import configure_backend, pick_device, resolve_device
from gpu_node.engine.progress import EngineProgress, check_cancel
from gpu_node.errors import BadInputError, Cancelled
from gpu_node.tensors import image_to_tensor, tensor_to_image


def test_cpu_by_name_and_auto_resolves_to_something_present() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    auto = resolve_device(None)
    expected = "cuda" if torch.cuda.is_available() else auto.type
    assert auto.type == expected


@pytest.mark.parametrize("name", ["bogus", "cuda:7", "tpu"])
def test_unavailable_or_unknown_device_is_a_bad_input(name: str) -> None:
    if name.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has eight GPUs")
    with pytest.raises(BadInputError, match="device"):
        resolve_device(name)


def test_cpu_uses_the_threads_it_is_given() -> None:
    before = torch.get_num_threads()
    try:
        assert configure_backend(torch.device("cpu"), threads=1).threads == 1
        assert not configure_backend(torch.device("cpu"), threads=1).tf32
    finally:
        torch.set_num_threads(before)


def test_image_tensor_round_trip_is_exact() -> None:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(17, 23, 3), dtype=np.uint8)
    tensor = image_to_tensor(Image.fromarray(pixels))
    assert tensor.shape == (1, 3, 17, 23) and tensor.dtype == torch.float32
    assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0
    assert np.array_equal(np.array(tensor_to_image(tensor)), pixels)


def test_tensor_to_image_clamps_and_checks_shape() -> None:
    img = tensor_to_image(torch.tensor([[[[2.0]], [[-1.0]], [[0.5]]]]))
    assert img.getpixel((0, 0)) == (255, 0, 128)
    with pytest.raises(ValueError, match="channels"):
        tensor_to_image(torch.zeros(1, 4, 2, 2))


def test_progress_and_cancel() -> None:
    progress = EngineProgress(epoch=5, epochs=20, losses={"style": 1.0}, elapsed=0.5)
    assert progress.fraction == 0.25
    flag = threading.Event()
    check_cancel(flag)
    check_cancel(None)
    flag.set()
    with pytest.raises(Cancelled):
        check_cancel(flag)
