"""The command line as a person uses it: `styles`, and `stylize` with the fast methods."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fast_helpers import DATA, one_thread
from PIL import Image

from gpu_node.cli import main
from gpu_node.fast.johnson import JohnsonNet
from gpu_node.fast.modelfile import ModelInfo, save_model

PHOTO = str(DATA / "chelsea.png")
PAINTING = str(DATA / "the_scream.jpg")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


def test_styles_lists_builtins_and_trained_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_model(
        tmp_path / "my-wave.safetensors",
        JohnsonNet(),
        ModelInfo(name="My Wave", source="great_wave.jpg", thumbnail=b""),
    )
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    assert main(["styles", "--models-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 28 and lines[0].split() == ["ID", "KIND", "NAME"]  # a header, sorted
    assert [line.split()[0] for line in lines[1:]] == sorted(line.split()[0] for line in lines[1:])
    assert ["builtin:starry-blue", "builtin"] in [line.split()[:2] for line in lines]
    assert lines[-1].split()[:3] == ["trained:my-wave", "trained", "My"]
    assert main(["styles", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 26 and rows[0]["method"] == "fast" and "thumbnail" not in rows[0]


@pytest.mark.parametrize(
    "extra",
    [
        ["--method", "fast", "--style", "builtin:starry-blue:0.7,woven-blocks:0.3"],
        ["--method", "fast", "--style", "lilac-haze", "--strength", "0.5", "--preserve-colors"],
        ["--method", "arbitrary", "--style-image", PAINTING, "--strength", "0.8"],
    ],
)
def test_stylize_writes_a_png_at_the_asked_size(tmp_path: Path, extra: list[str]) -> None:
    out = tmp_path / "out.png"
    args = ["stylize", "--content", PHOTO, "--out", str(out), "--size", "120", *extra]
    assert main(args) == 0
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (120, 80)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "fast"], "needs --style"),
        (["--method", "fast", "--style", "builtin:nope"], "unknown style"),
        (["--method", "fast", "--style", "starry-blue:-2"], "positive"),
        (["--method", "fast", "--style", "starry-blue", "--strength", "2"], "strength"),
        (["--method", "arbitrary"], "exactly one --style-image"),
        (["--method", "fast", "--style", "starry-blue", "--size", "4"], "size must be"),
        (["--method", "arbitrary", "--style-image", PHOTO + ".missing"], "no such file"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    args = ["stylize", "--content", PHOTO, "--out", str(tmp_path / "o.png"), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o.png").exists()
