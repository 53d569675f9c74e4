"""The trained-style file: one safetensors file with the network and what it is.

Its metadata and header checks live in `modelinfo` (read without torch); loading checks
the format tag and that every tensor name and shape is exactly `JohnsonNet`'s, so a
foreign or damaged file raises WeightsError with the reason instead of half-loading.
"""

import base64
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from gpu_node.errors import WeightsError
from gpu_node.fast.johnson import JohnsonNet
from gpu_node.fast.modelinfo import FORMAT, MAX_FILE_BYTES, ModelInfo, read_info

__all__ = [
    "FORMAT",
    "MAX_FILE_BYTES",
    "ModelInfo",
    "expected_shapes",
    "load_model",
    "read_info",
    "save_model",
]


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
    # Written like the checkpoint beside it (open() honours the umask: 0644 as a rule);
    # safetensors' own save_file makes 0600 files that a node run as another user
    # cannot read. A crash mid-write keeps the old model.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(save(tensors, metadata=metadata))
    os.replace(tmp, path)


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
