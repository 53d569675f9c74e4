"""The style registry: 26 built-ins with honest thumbnails, trained models, bad files refused."""

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fast_helpers import mad, one_thread, photo
from PIL import Image
from safetensors.torch import save_file

from gpu_node.errors import BadInputError
from gpu_node.fast.engine import FastEngine
from gpu_node.fast.gallery import BUILTIN_STYLES
from gpu_node.fast.johnson import JohnsonNet
from gpu_node.fast.make_thumbnails import render_thumbnail
from gpu_node.fast.modelfile import FORMAT, ModelInfo, expected_shapes, save_model
from gpu_node.fast.multistyle import NUM_STYLES, load_multistyle
from gpu_node.fast.registry import StyleKind, build_registry, slugify
from gpu_node.fast.spec import parse_style_mix
from gpu_node.tensors import image_to_tensor


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


def _decode(jpeg: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(jpeg))
    assert img.format == "JPEG"
    return img.convert("RGB")


def test_builtins_have_unique_ids_names_and_jpeg_thumbnails() -> None:
    registry = build_registry(None)
    entries = list(registry)
    assert len(entries) == NUM_STYLES
    assert len({e.id for e in entries}) == len({e.name for e in entries}) == NUM_STYLES
    assert all(e.id.startswith("builtin:") and e.kind is StyleKind.BUILTIN for e in entries)
    sizes = {_decode(e.thumbnail).size for e in entries}
    assert sizes == {(192, 128)}
    assert len({e.thumbnail for e in entries}) == NUM_STYLES
    advert = registry.adverts()[19]
    assert advert["id"] == "builtin:starry-blue" and advert["method"] == "fast"
    assert isinstance(advert["thumbnail"], bytes)


@pytest.mark.parametrize("index", [0, 17])
def test_thumbnails_are_what_our_network_draws(index: int) -> None:
    net = load_multistyle()
    style = BUILTIN_STYLES[index]
    fresh = render_thumbnail(lambda x: net.stylize(x, torch.eye(NUM_STYLES)[index]))
    stored = image_to_tensor(_decode(style.thumbnail()))
    assert mad(image_to_tensor(_decode(fresh)), stored) < 0.01
    other = image_to_tensor(_decode(BUILTIN_STYLES[(index + 1) % NUM_STYLES].thumbnail()))
    assert mad(other, stored) > 0.05


def _good_model(path: Path, name: str = "Test Style") -> None:
    info = ModelInfo(name=name, source="test.jpg", thumbnail=b"\xff\xd8jpeg", params={"x": 1})
    save_model(path, JohnsonNet(), info)


def test_bad_model_files_are_refused_with_a_log_line_and_the_rest_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _good_model(tmp_path / "Good One.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 100)
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "model.pt").write_bytes(b"pickle")
    save_file({"w": torch.zeros(3)}, str(tmp_path / "foreign.safetensors"))
    shapes = expected_shapes()
    wrong = {k: torch.zeros(*shape) for k, shape in shapes.items()}
    wrong["out.weight"] = torch.zeros(3, 32, 3, 3)
    save_file(wrong, str(tmp_path / "wrong-shape.safetensors"), metadata={"format": FORMAT})
    (tmp_path / "Good One.safetensors.ckpt").write_bytes(b"checkpoint")

    with caplog.at_level(logging.WARNING, logger="gpu_node.fast.registry"):
        registry = build_registry(tmp_path)

    trained = [e for e in registry if e.kind is StyleKind.TRAINED]
    assert [(e.id, e.name, e.source) for e in trained] == [
        ("trained:good-one", "Test Style", "test.jpg")
    ]
    assert len(registry) == NUM_STYLES + 1
    refused = [r.getMessage() for r in caplog.records]
    for bad in ("garbage", "empty", "model.pt", "foreign", "wrong-shape"):
        assert sum(bad in m and "refused" in m for m in refused) == 1, (bad, refused)
    assert not any("ckpt" in m for m in refused)
    assert any("not a Stylerelay fast-style model" in m for m in refused)
    assert any("do not fit the network" in m for m in refused)


def test_a_missing_models_dir_leaves_the_builtins(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        registry = build_registry(tmp_path / "nope")
    assert len(registry) == NUM_STYLES
    assert "does not exist" in caplog.text


def test_trained_models_stylise_and_refuse_blending(tmp_path: Path) -> None:
    _good_model(tmp_path / "mine.safetensors")
    engine = FastEngine(build_registry(tmp_path), torch.device("cpu"))
    x = photo()
    out = engine.stylize(x, parse_style_mix("trained:mine"))
    assert out.shape == x.shape
    with pytest.raises(BadInputError, match="blend"):
        engine.stylize(x, parse_style_mix("trained:mine:0.5,builtin:starry-blue:0.5"))
    with pytest.raises(BadInputError, match="blend"):
        engine.stylize(x, parse_style_mix("builtin:starry-blue:0.5,trained:mine:0.5"))


@pytest.mark.parametrize(
    ("text", "slug"),
    [("Great Wave", "great-wave"), ("123", "model-123"), ("__", "model"), ("Ünï", "n")],
)
def test_slugs_start_with_a_letter(text: str, slug: str) -> None:
    assert slugify(text) == slug
