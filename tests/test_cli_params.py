"""The node's command line shares the daemon's tables: the methods, the job parameters
(names, ranges, defaults) and the style ids the API uses (`fast:builtin:starry-blue`)."""

import argparse
import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from fast_helpers import DATA, one_thread
from PIL import Image

from gpu_node.cli import build_parser, main
from gpu_node.methods import METHODS
from protocol.params import METHODS as PROTOCOL_METHODS
from protocol.params import TABLE

ROOT = Path(__file__).resolve().parent.parent
PHOTO = str(DATA / "chelsea.png")
PAINTING = str(DATA / "the_scream.jpg")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


def _stylize(tmp_path: Path, *extra: str) -> list[str]:
    return ["stylize", "--content", PHOTO, "--out", str(tmp_path / "o.png"), *extra]


def test_the_api_ids_of_fast_styles_are_taken(tmp_path: Path) -> None:
    args = _stylize(tmp_path, "--method", "fast", "--size", "60", "--style")
    assert main([*args, "fast:builtin:starry-blue"]) == 0
    assert main([*args, "fast:builtin:starry-blue:0.7,fast:builtin:woven-blocks:0.3"]) == 0
    with Image.open(tmp_path / "o.png") as img:
        assert img.size == (60, 40)


def test_every_method_and_public_parameter_is_an_option() -> None:
    assert tuple(METHODS) == PROTOCOL_METHODS
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    stylize: argparse.ArgumentParser = sub.choices["stylize"]
    options = {o for action in stylize._actions for o in action.option_strings}
    for param in TABLE:
        if param.public:
            assert "--" + param.name.replace("_", "-") in options, param.name
    method = next(a for a in stylize._actions if "--method" in a.option_strings)
    assert tuple(method.choices or ()) == PROTOCOL_METHODS


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--method", "arbitrary", "--style-image", PAINTING, "--seed", "3"], "applies to"),
        (["--method", "fast", "--style", "starry-blue", "--init", "noise"], "applies to"),
        (["--style-image", PAINTING, "--style-scale", "5"], "style_scale must be a number between"),
        (["--style-image", PAINTING, "--size", "9000"], "between 16 and 8192 pixels"),
        (["--method", "fast", "--style", "starry-blue", "--size", "4"], "size must be"),
    ],
)
def test_values_outside_the_table_exit_2_naming_the_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], says: str
) -> None:
    assert main(_stylize(tmp_path, *extra)) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("package", ["engine", "fast"])
def test_the_engine_packages_build_no_argparse_parsers(package: str) -> None:
    for path in sorted((ROOT / "gpu_node" / package).glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "argparse" not in names | modules, path.name
