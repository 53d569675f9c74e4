"""The one table of job parameters (`protocol.params`): sound in itself, quoted exactly by
the docs, and the one source of the relay's, the node's and the engine's ranges and
defaults."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gpu_node.daemon.params import GATYS_ENGINE_KEYS
from gpu_node.engine.gatys_params import MAX_SIZE, GatysParams
from protocol.params import (
    EPOCHS,
    METHODS,
    PARAMS,
    SIZE,
    TABLE,
    Kind,
    ParamError,
    defaults,
    markdown_table,
)
from relay import orders
from relay.config import Config
from relay.openapi import document

ROOT = Path(__file__).resolve().parent.parent
MARKED = re.compile(r"<!-- params:start[^>]*-->\n(.*?)<!-- params:end -->", re.S)


def test_every_entry_is_sound() -> None:
    assert len(PARAMS) == len(TABLE)
    for param in TABLE:
        assert param.methods and set(param.methods) <= set(METHODS), param.name
        assert param.help.endswith((".", ")")), param.name
        if param.default is not None:
            for method in param.methods:
                assert param.check(param.default, method) == param.default, param.name
        if param.kind is Kind.CHOICE:
            assert param.choices and param.default in param.choices


@pytest.mark.parametrize(
    ("name", "value", "method", "rule"),
    [
        ("size", 15, "fast", "a whole number between 16 and 16384 pixels"),
        ("size", 8193, "gatys", "a whole number between 16 and 8192 pixels"),
        ("size", 2.5, "fast", "a whole number"),
        ("epochs", 0, "gatys", "a whole number of 1 or more"),
        ("learning_rate", 0.0, "gatys", "a number greater than zero"),
        ("tv_weight", -1e-9, "gatys", "a number of zero or more"),
        ("tv_weight", float("inf"), "gatys", "a number of zero or more"),
        ("tv_weight", 10**400, "gatys", "a number of zero or more"),
        ("strength", 1.01, "fast", "a number between 0 and 1"),
        ("keep_colors", 1, "fast", "true or false"),
        ("init", "Noise", "gatys", "one of content, noise, style"),
        ("seed", 2**63, "gatys", "between 0 and 9223372036854775807"),
        pytest.param("seed", 10**5000, "gatys", "not a 16610-bit number", id="vast-seed"),
    ],
)
def test_values_outside_the_table_name_the_rule(
    name: str, value: object, method: str, rule: str
) -> None:
    with pytest.raises(ParamError, match=re.escape(rule)) as caught:
        PARAMS[name].check(value, method)
    assert caught.value.name == name and caught.value.message.startswith(f"{name} must be")


def test_values_inside_are_normalised() -> None:
    assert SIZE.check(8192, "gatys") == 8192 and SIZE.check(16384, "fast") == 16384
    assert EPOCHS.check(300.0) == 300 and type(EPOCHS.check(300.0)) is int
    assert PARAMS["style_weight"].check(2) == 2.0 and type(PARAMS["style_weight"].check(2)) is float
    assert PARAMS["keep_colors"].check(False) is False


def test_a_cap_narrows_the_range() -> None:
    assert SIZE.high_for("gatys") == 8192 and SIZE.high_for("fast") == 16384
    assert SIZE.high_for("fast", 1000) == 1000 and SIZE.high_for("gatys", 10**6) == 8192
    with pytest.raises(ParamError, match="between 16 and 1000 pixels"):
        SIZE.check(1001, "fast", 1000)


def test_the_relay_takes_every_public_parameter() -> None:
    assert set(orders.PARAMS) == {p.name for p in TABLE if p.public}
    assert "style_mix" not in orders.FIELDS
    assert EPOCHS.default == orders.DEFAULT_EPOCHS


def test_the_engine_has_the_tables_range_and_defaults() -> None:
    assert SIZE.high_for("gatys") == MAX_SIZE
    engine = GatysParams()
    fields = {f.name for f in dataclasses.fields(GatysParams)}
    assert set(GATYS_ENGINE_KEYS) <= fields
    for name, default in defaults("gatys").items():
        if name == "keep_colors":
            assert engine.preserve_colors is default
            continue
        # The wire's strength is the engine's style_strength (gpu_node.daemon.params).
        value = getattr(engine, "style_strength" if name == "strength" else name)
        assert getattr(value, "value", value) == default, name


@pytest.mark.parametrize("doc", ["docs/api.md", "docs/protocol.md"])
def test_the_docs_quote_the_table_exactly(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    quoted = MARKED.findall(text)
    assert len(quoted) == 1, f"{doc}: one <!-- params:start --> ... <!-- params:end --> block"
    assert quoted[0] == markdown_table(), (
        f"{doc} quotes an old table of job parameters; paste in this one:\n{markdown_table()}"
    )


def test_the_table_is_torch_free() -> None:
    code = "import sys, protocol.params; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_the_openapi_schemas_come_from_the_table() -> None:
    doc = document(Config().replace(max_size=1500, max_epochs=321))
    props = doc["components"]["schemas"]["JobJson"]["properties"]
    assert props["init"]["enum"] == ["content", "noise", "style"]
    assert props["pooling"]["enum"] == ["max", "avg"]
    assert (props["style_scale"]["minimum"], props["style_scale"]["maximum"]) == (0.05, 4.0)
    assert props["learning_rate"]["exclusiveMinimum"] == 0
    assert (props["size"]["maximum"], props["epochs"]["maximum"]) == (1500, 321)
    assert "gatys" in props["style_scale"]["description"]
    assert "style_mix" not in props
