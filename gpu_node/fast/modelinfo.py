"""What a trained-style file says about itself, read without torch.

A safetensors file starts with an 8-byte little-endian header length and a JSON header:
tensor name -> dtype, shape and offsets, plus `__metadata__` (strings). Reading that
header directly keeps `python -m gpu_node styles` and the node's start-up scan free of
torch; `modelfile` loads the weights themselves. Metadata of our files:

    format      "stylerelay-fast/1"       refuses files that are not ours
    name        display name              "Great Wave"
    source      the painting it learned   "great_wave.jpg"
    params      JSON of training params   iterations, weights, image size, ...
    thumbnail   base64 JPEG               rendered by the network at the end of training
"""

import base64
import binascii
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpu_node.errors import WeightsError

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


def johnson_shapes() -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a `JohnsonNet` state dict (a test holds it to the network)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def layer(prefix: str, out: int, into: int, kernel: int) -> None:
        shapes[f"{prefix}.conv.weight"] = (out, into, kernel, kernel)
        for name in ("conv.bias", "norm.weight", "norm.bias"):
            shapes[f"{prefix}.{name}"] = (out,)

    layer("contract.0", 32, 3, 9)
    layer("contract.1", 64, 32, 3)
    layer("contract.2", 128, 64, 3)
    for block in range(5):
        layer(f"residual.{block}.first", 128, 128, 3)
        layer(f"residual.{block}.second", 128, 128, 3)
    layer("expand.0.layer", 64, 128, 3)
    layer("expand.1.layer", 32, 64, 3)
    shapes["out.weight"] = (3, 32, 9, 9)
    shapes["out.bias"] = (3,)
    return shapes


def _header(path: Path, size: int) -> dict[str, Any]:
    """The JSON header of a safetensors file."""
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("shorter than a safetensors header")
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            raise ValueError(f"header of {length:,} bytes in a {size:,}-byte file")
        header = json.loads(f.read(length))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return header


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
        header = _header(path, size)
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict):
            raise ValueError("__metadata__ is not an object")
        shapes = {k: tuple(v["shape"]) for k, v in header.items()}
    except (OSError, ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    if metadata.get("format") != FORMAT:
        raise WeightsError(
            f"{path}: not a Stylerelay fast-style model (format tag "
            f"{metadata.get('format')!r}, expected {FORMAT!r})"
        )
    want = johnson_shapes()
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
    except (binascii.Error, json.JSONDecodeError, TypeError) as exc:
        raise WeightsError(f"{path}: damaged metadata ({exc})") from None
    name = str(metadata.get("name", "")).strip() or path.stem
    return ModelInfo(
        name=name, source=str(metadata.get("source", "")), thumbnail=thumbnail, params=params
    )
