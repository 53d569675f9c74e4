"""`python -m gpu_node stylize`: a PNG on good input, exit 2 and one line on bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from gpu_node.cli import main

DATA = Path(__file__).parent / "data"
CAT, STARRY, WAVE = DATA / "cat.jpg", DATA / "starry_night.jpg", DATA / "great_wave.jpg"


def _args(out: Path, *extra: str) -> list[str]:
    return ["stylize", "--content", str(CAT), "--style-image", str(STARRY), "--out", str(out),
            "--size", "32", "--epochs", "2", *extra]  # fmt: skip


def _one_line_error(
    capsys: pytest.CaptureFixture[str], argv: list[str], words: str, status: int = 2
) -> None:
    assert main(argv) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("stylerelay-node: ") and words in err[0]


def test_writes_a_png_of_the_asked_size(tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    argv = _args(out, "--style-image", str(WAVE), "--style-weights", "2", "1", "--seed", "3")
    assert main(argv) == 0
    with Image.open(out) as img:
        assert img.format == "PNG" and max(img.size) == 32 and img.mode == "RGB"


def test_jpeg_output_by_extension(tmp_path: Path) -> None:
    out = tmp_path / "out.jpg"
    assert main(_args(out, "--optimizer", "adam", "--preserve-colors")) == 0
    with Image.open(out) as img:
        assert img.format == "JPEG"


def test_bad_inputs_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1)).save(tiny)
    out = tmp_path / "o.png"
    base = ["stylize", "--style-image", str(STARRY), "--out", str(out), "--epochs", "2"]
    _one_line_error(capsys, [*base, "--content", str(text)], "not an image")
    _one_line_error(capsys, [*base, "--content", str(tiny)], "too small")
    _one_line_error(capsys, [*base, "--content", str(tmp_path / "gone.jpg")], "no such file")
    _one_line_error(capsys, _args(out, "--epochs", "20", "--max-epochs", "10"), "max_epochs=10")
    _one_line_error(capsys, _args(out, "--style-weights", "1", "2"), "--style-weights")
    _one_line_error(capsys, _args(out, "--device", "quantum"), "unknown device")
    # Unusable weights are the node's set-up, not the picture: exit status 1.
    _one_line_error(capsys, _args(out, "--weights", str(text)), "not a torch weights file", 1)
    _one_line_error(capsys, _args(tmp_path / "no" / "dir.png"), "no such directory")
    assert not out.exists()


def test_gatys_needs_a_style_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["stylize", "--content", str(CAT), "--out", str(tmp_path / "o.png")]
    _one_line_error(capsys, argv, "--style-image")


@pytest.mark.slow
def test_the_real_command_line(tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    done = subprocess.run(
        [sys.executable, "-m", "gpu_node", *_args(out)], check=False, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 0 and "epoch" in done.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "gpu_node", *_args(out, "--content", str(tmp_path))],
        check=False,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "directory" in bad.stderr
