"""The trained-style file: one safetensors file with the network and what it is.

Metadata (all strings, as safetensors requires):

    format      "stylerelay-fast/1"       refuses files that are not ours
    name        display name              "Great Wave"
    source      the painting it learned   "great_wave.jpg"
    params      JSON of training params   iterations, weights, image size, ...
    thumbnail   base64 JPEG               rendered by the network at the end of training

Loading checks the format tag and that every tensor name and shape is exactly
`JohnsonNet`'s, so a foreign or damaged file raises WeightsError with the reason instead
of half-loading.
"""

import base64
import binascii
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from gpu_node.errors import WeightsError
from gpu_node.fast.johnson import JohnsonNet

FORMAT = "stylerelay-fast/1"
# A JohnsonNet is ~3.4 MB in half precision; anything far larger is not one.
MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ModelInfo:
    """What a trained-style file says about itself."""

    name: str
    source: str
    thumbnail: bytes
    params: dict[str, Any] = field(default_factory=dict)


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a JohnsonNet state dict."""
    return {k: tuple(v.shape) for k, v in JohnsonNet().state_dict().items()}


def save_model(path: Path, net: JohnsonNet, info: ModelInfo) -> None:
    """Write `net` in half precision with `info` as metadata."""
    tensors = {
        k: v.detach().to("cpu", torch.float16).contiguous() for k, v in net.state_dict().items()
    }
    metadata = {
        "format": FORMAT,
        "name": info.name,
        "source": info.source,
        "params": json.dumps(info.params, sort_keys=True),
        "thumbnail": base64.b64encode(info.thumbnail).decode("ascii"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)


def read_info(path: Path) -> ModelInfo:
    """Check a file's header (format, tensor names and shapes) and return its metadata.

    Reads no weights, so scanning a models folder stays cheap.
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise WeightsError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if size > MAX_FILE_BYTES:
        raise WeightsError(f"{path}: {size:,} bytes is too large for a fast-style model")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    if metadata.get("format") != FORMAT:
        raise WeightsError(
            f"{path}: not a Stylerelay fast-style model (format tag "
            f"{metadata.get('format')!r}, expected {FORMAT!r})"
        )
    want = expected_shapes()
    if shapes != want:
        missing = sorted(set(want) - set(shapes))[:3]
        extra = sorted(set(shapes) - set(want))[:3]
        wrong = sorted(k for k in set(want) & set(shapes) if want[k] != shapes[k])[:3]
        raise WeightsError(
            f"{path}: tensors do not fit the network (missing {missing}, "
            f"unexpected {extra}, wrong shape {wrong})"
        )
    try:
        thumbnail = base64.b64decode(metadata.get("thumbnail", ""), validate=True)
        params = json.loads(metadata.get("params", "{}"))
    except (binascii.Error, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: damaged metadata ({exc})") from None
    name = metadata.get("name", "").strip() or path.stem
    return ModelInfo(
        name=name, source=metadata.get("source", ""), thumbnail=thumbnail, params=params
    )


def load_model(path: Path, device: torch.device) -> JohnsonNet:
    """The network of a checked file, on `device`, in float32 for inference."""
    read_info(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k).float() for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: weights cannot be read ({exc})") from None
    if not all(torch.isfinite(t).all() for t in state.values()):
        raise WeightsError(f"{path}: weights contain NaN or infinity")
    net = JohnsonNet()
    net.load_state_dict(state)
    return net.to(device).eval().requires_grad_(False)
