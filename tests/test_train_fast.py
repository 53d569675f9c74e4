"""A short training run lowers the loss, checkpoints, resumes, and yields a servable style."""

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fast_helpers import DATA, PHOTOS, mad, one_thread, photo

from gpu_node.cli import main
from gpu_node.engine.progress import EngineProgress
from gpu_node.errors import BadInputError
from gpu_node.fast.engine import FastEngine
from gpu_node.fast.modelfile import read_info
from gpu_node.fast.registry import StyleKind, build_registry
from gpu_node.fast.spec import parse_style_mix
from gpu_node.fast.training import TrainConfig, train

CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """The bundled photos in nested folders, plus files that are not photos at all."""
    root = tmp_path / "photos"
    (root / "nested" / "deeper").mkdir(parents=True)
    for i, name in enumerate(PHOTOS):
        target = root if i == 0 else root / "nested" if i == 1 else root / "nested" / "deeper"
        shutil.copy(DATA / name, target / name)
    (root / "nested" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (root / "notes.txt").write_text("ignored: not a photo suffix")
    return root


def _config(dataset: Path, out: Path, iterations: int) -> TrainConfig:
    return TrainConfig(
        dataset=dataset,
        style=DATA / "starry_night.jpg",
        out=out,
        name="Tiny Starry",
        iterations=iterations,
        batch_size=2,
        image_size=32,
        style_size=64,
        checkpoint_interval=2,
        lr=1e-2,
    )


@pytest.mark.slow
def test_training_lowers_the_loss_and_the_model_is_served(
    dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    models = tmp_path / "models"
    out = models / "tiny-starry.safetensors"
    seen: list[EngineProgress] = []
    with caplog.at_level(logging.WARNING):
        result = train(_config(dataset, out, 10), CPU, progress=seen.append, show_bar=False)
    assert [p.epoch for p in seen] == list(range(1, 11))
    assert {"content", "style", "tv", "total"} <= seen[0].losses.keys()
    first = sum(p.losses["total"] for p in seen[:3]) / 3
    last = sum(p.losses["total"] for p in seen[-3:]) / 3
    assert last < 0.7 * first, (first, last)
    assert result.model == out and out.stat().st_size < 5_000_000  # half precision
    assert "broken.jpg" in caplog.text

    info = read_info(out)
    assert info.name == "Tiny Starry" and info.source == "starry_night.jpg"
    assert info.params["iterations"] == 10 and info.thumbnail[:2] == b"\xff\xd8"

    registry = build_registry(models)
    entry = registry.get("trained:tiny-starry")
    assert entry.kind is StyleKind.TRAINED and entry.name == "Tiny Starry"
    x = photo()
    styled = FastEngine(registry, CPU).stylize(x, parse_style_mix(entry.id))
    assert styled.shape == x.shape and mad(styled, x) > 0.02


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    train(_config(dataset, out, 2), CPU, show_bar=False)
    checkpoint = _config(dataset, out, 2).checkpoint_path
    assert checkpoint.is_file()
    seen: list[EngineProgress] = []
    train(_config(dataset, out, 3), CPU, resume=checkpoint, progress=seen.append, show_bar=False)
    assert [p.epoch for p in seen] == [3]
    assert read_info(out).params["iterations"] == 3


def test_bad_training_input_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInputError, match="holds no"):
        train(_config(empty, tmp_path / "x.safetensors", 2), CPU, show_bar=False)
    with pytest.raises(BadInputError, match="not a folder"):
        train(_config(tmp_path / "nope", tmp_path / "x.safetensors", 2), CPU, show_bar=False)
    with pytest.raises(BadInputError, match="cannot resume"):
        (tmp_path / "bad.ckpt").write_bytes(b"junk")
        train(
            _config(DATA, tmp_path / "x.safetensors", 2),
            CPU,
            resume=tmp_path / "bad.ckpt",
            show_bar=False,
        )


def test_train_cli_rejects_bad_numbers_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--dataset", str(DATA), "--style", str(DATA / "starry_night.jpg")]
    args += ["--out", str(tmp_path / "m.safetensors"), "--iterations", "0"]
    assert main(args) == 2
    assert "iterations" in capsys.readouterr().err
