"""The seeds' classic `POST /transform` body: `{email, filename, image, model}`.

`model` names a style. It may be a style id as `/api/styles` lists them
(`painting:udnie`, `fast:builtin:candy`), or the bare name the seeds used: a painting's
key (`starry_night` → `painting:starry_night`), or the last part of a fast style's name
(`candy` → `fast:builtin:candy`). Paintings win a tie: they are always on offer, where a
fast style comes and goes with the nodes that have it.
"""

from collections.abc import Iterable

from relay import gallery
from relay.errors import BadRequest
from relay.orders import RawOrder

MAX_MODEL = 100


def model_style(model: object, fast_names: Iterable[str]) -> str:
    """The style id a seed's `model` names; BadRequest if it names none."""
    if type(model) is not str or not (name := model.strip()) or len(name) > MAX_MODEL:
        raise BadRequest("`model` must name a style: an id from /api/styles, or its bare name.")
    fast = sorted(fast_names)
    if gallery.find(name) is not None or (name.startswith("fast:") and name[5:] in fast):
        return name
    if gallery.find(gallery.PREFIX + name) is not None:
        return gallery.PREFIX + name
    matches = [f for f in fast if f == name or f.rsplit(":", 1)[-1] == name]
    if matches:
        # builtin before trained: a node's own training may reuse a built-in's name.
        return "fast:" + min(matches, key=lambda f: (not f.startswith("builtin:"), f))
    raise BadRequest(f"Unknown model {name[:40]!r}; see /api/styles for the styles on offer.")


def take_model(raw: RawOrder, fast_names: Iterable[str]) -> None:
    """Turn a seed's `model` field into the order's style (when no `style` is given)."""
    if "model" not in raw.fields:
        return
    model = raw.fields.pop("model")
    if raw.style_ids or raw.style_images:
        raise BadRequest("Give either `model` or `style`, not both.")
    raw.style_ids.append(model_style(model, fast_names))
