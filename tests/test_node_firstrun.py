"""First run and the command line: help and `styles` without torch, defaults said once,
`styles` sorted under a header, and a trained model readable by everyone like its checkpoint.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Runs a CLI entry in-process, then says whether torch was imported on the way.
_PROBE = """
import sys
from {module} import main
try:
    main({argv!r})
except SystemExit:
    pass
sys.stdout.write("\\nTORCH=" + str("torch" in sys.modules) + "\\n")
"""


def _probe(module: str, argv: list[str]) -> tuple[str, bool]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module, argv=argv)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    out, _, flag = done.stdout.rpartition("\nTORCH=")
    return out, flag.strip() == "True"


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["styles"], ["stylize", "--help"], ["train", "--help"], ["run", "--help"]],
)
def test_help_and_styles_do_not_import_torch(argv: list[str]) -> None:
    out, torch_loaded = _probe("gpu_node.cli", argv)
    assert out.strip(), "printed nothing"
    assert not torch_loaded, f"{argv} imported torch"


def test_styles_is_sorted_under_a_header() -> None:
    out, _ = _probe("gpu_node.cli", ["styles"])
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines[0].split() == ["ID", "KIND", "NAME"]
    ids = [line.split()[0] for line in lines[1:]]
    assert len(ids) >= 26 and "builtin:starry-blue" in ids
    assert ids == sorted(ids)


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += _subparsers(child)
    return found


def _all_help() -> dict[str, str]:
    from gpu_node.cli import build_parser as node_parser
    from relay.cli import build_parser as relay_parser

    texts = {}
    for parser in (*_subparsers(node_parser()), *_subparsers(relay_parser())):
        texts[parser.prog] = parser.format_help()
    return texts


def test_help_says_each_default_once_and_never_none() -> None:
    texts = _all_help()
    assert {"stylerelay-node stylize", "stylerelay-node train", "stylerelay-relay tokens add"} <= (
        texts.keys()
    )
    for prog, text in texts.items():
        flat = " ".join(text.split())
        assert "(default: None)" not in flat, prog
        for chunk in flat.split(" -")[1:]:
            assert chunk.count("(default") <= 1, (prog, chunk)


def test_method_has_help_and_train_shows_its_defaults() -> None:
    texts = _all_help()
    stylize = " ".join(texts["stylerelay-node stylize"].split())
    method = stylize.split("--method")[2].split("--content")[0]
    assert "gatys" in method and "(default: gatys)" in method and len(method.split()) > 4
    train = " ".join(texts["stylerelay-node train"].split())
    assert "--iterations ITERATIONS" in train and "(default: 10000)" in train
    assert "(default: 4)" in train  # batch size


def test_header_shapes_are_the_networks() -> None:
    from gpu_node.fast.modelfile import expected_shapes
    from gpu_node.fast.modelinfo import johnson_shapes

    assert johnson_shapes() == expected_shapes()


@pytest.mark.slow
def test_trained_model_is_world_readable_like_its_checkpoint(tmp_path: Path) -> None:
    import shutil

    import torch
    from fast_helpers import DATA, PHOTOS, one_thread

    from gpu_node.fast.training import TrainConfig, train

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in PHOTOS:
        shutil.copy(DATA / name, photos / name)
    out = tmp_path / "models" / "tiny.safetensors"
    config = TrainConfig(
        dataset=photos,
        style=DATA / "starry_night.jpg",
        out=out,
        iterations=1,
        batch_size=1,
        image_size=32,
        style_size=32,
        checkpoint_interval=1,
    )
    old = os.umask(0o022)
    try:
        with one_thread():
            train(config, torch.device("cpu"), show_bar=False)
    finally:
        os.umask(old)
    assert config.checkpoint_path.stat().st_mode & 0o777 == 0o644
    assert out.stat().st_mode & 0o777 == 0o644
