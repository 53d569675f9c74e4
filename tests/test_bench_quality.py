"""bench/quality.py's evaluator: its numbers mean what they say, and `--quick` runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from bench.quality import Evaluator, main
from gpu_node.images import open_image

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    return Evaluator()


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return open_image(DATA / "cat.jpg")


@pytest.fixture(scope="module")
def painting() -> Image.Image:
    return open_image(DATA / "starry_night.jpg")


def test_the_photo_itself_scores_style_one_and_content_zero(
    evaluator: Evaluator, photo: Image.Image, painting: Image.Image
) -> None:
    score = evaluator.score(photo, photo, painting)
    assert score.style_ratio == pytest.approx(1.0)
    assert score.content_ratio == 0.0


def test_the_painting_itself_scores_style_zero_and_content_one(
    evaluator: Evaluator, photo: Image.Image, painting: Image.Image
) -> None:
    # The painting is squeezed to the photo's shape for the content measure, as is any
    # output; its style is measured at its own shape, so its style ratio is exactly 0 only
    # when the shapes agree.
    score = evaluator.score(painting.resize(photo.size), photo, painting.resize(photo.size))
    assert score.style_ratio == pytest.approx(0.0, abs=1e-9)
    assert score.content_ratio == pytest.approx(1.0)


def test_a_resized_photo_scores_as_the_photo(
    evaluator: Evaluator, photo: Image.Image, painting: Image.Image
) -> None:
    bigger = photo.resize((photo.width * 2, photo.height * 2), Image.Resampling.BICUBIC)
    score = evaluator.score(bigger, photo, painting)
    assert score.style_ratio == pytest.approx(1.0, abs=0.05)
    assert score.content_ratio < 0.05


@pytest.mark.slow
def test_quick_compare_styles_the_photo_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "q.json"
    root = tmp_path / "images"
    (root / "content").mkdir(parents=True)
    (root / "styles").mkdir()
    open_image(DATA / "cat.jpg").save(root / "content" / "cat.png")
    open_image(DATA / "starry_night.jpg").save(root / "styles" / "starry_night.png")
    assert main(["compare", "--quick", "--root", str(root), "--json", str(out),
                 "--images", str(tmp_path / "side")]) == 0  # fmt: skip
    record = json.loads(out.read_text())
    assert record["size"] == 128 and record["summary"]["pairs"] == 1
    (pair,) = record["pairs"]
    assert pair["pair"] == "cat+starry_night"
    for which in ("before", "after"):
        assert 0 < pair[which]["style_ratio"] < 1
        assert 0 < pair[which]["content_ratio"] < 1
        assert pair[f"{which}_s"] > 0
    with Image.open(tmp_path / "side" / "cat+starry_night_128.png") as side:
        assert side.size == (128 + 8 + 128, 85)  # before | after, the cat being 3:2
    # Again, reusing that run's before side: only after is painted, before is the same,
    # and no time ratio is claimed for a pair not painted both ways in this run.
    again = tmp_path / "again.json"
    assert main(["compare", "--quick", "--root", str(root), "--json", str(again),
                 "--before-from", str(out), "--images", str(tmp_path / "side")]) == 0  # fmt: skip
    second = json.loads(again.read_text())
    (reused,) = second["pairs"]
    assert reused["before_reused"] and reused["before"] == pair["before"]
    assert reused["after"]["style_ratio"] == pytest.approx(pair["after"]["style_ratio"], rel=1e-3)
    assert second["summary"]["timed_pairs"] == 0 and second["summary"]["time_ratio"] is None
    with Image.open(tmp_path / "side" / "cat+starry_night_128.png") as side:
        assert side.size == (128 + 8 + 128, 85)
    capsys.readouterr()
    assert main(["table", str(again)]) == 0
    table = capsys.readouterr().out
    assert f"| cat+starry_night | {pair['before']['style_ratio']:.4f} |" in table
    assert f"| {pair['before_s']:.0f}* |" in table  # reused seconds are marked
    assert "over the 0 pairs painted both ways in this run: -." in table
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({**record, "size": 256}))
    with pytest.raises(SystemExit, match="256 px"):
        main(["compare", "--quick", "--root", str(root), "--before-from", str(wrong)])
