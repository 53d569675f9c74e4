"""What the node advertises: styles with thumbnails that always fit one Hello frame."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from gpu_node.daemon.capabilities import build_capabilities, style_infos
from gpu_node.daemon.config import NodeConfig
from gpu_node.fast.registry import StyleEntry, StyleKind, StyleRegistry, build_registry
from gpu_node.methods import installed_methods
from protocol import Connection, Hello, Role
from protocol.limits import DEFAULT_MAX_FRAME_SIZE, MAX_THUMBNAIL_SIZE


def _noise_jpeg(side: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=95)
    return out.getvalue()


def _entry(n: int, thumbnail: bytes) -> StyleEntry:
    return StyleEntry(f"trained:s{n}", f"Style {n}", StyleKind.TRAINED, "test", thumbnail)


def test_an_oversized_thumbnail_is_shrunk_to_fit_the_protocol() -> None:
    big = _noise_jpeg(400)
    assert len(big) > MAX_THUMBNAIL_SIZE
    (info,) = style_infos(StyleRegistry([_entry(1, big)]))
    assert info.thumbnail_jpeg is not None and len(info.thumbnail_jpeg) <= MAX_THUMBNAIL_SIZE
    assert max(Image.open(io.BytesIO(info.thumbnail_jpeg)).size) == 128


def test_thumbnails_past_the_budget_are_left_out_but_the_styles_stay() -> None:
    thumbs = [_noise_jpeg(90, seed) for seed in range(6)]
    budget = sum(len(t) for t in thumbs[:3])
    infos = style_infos(StyleRegistry([_entry(n, t) for n, t in enumerate(thumbs)]), budget)
    assert [i.thumbnail_jpeg is not None for i in infos] == [True] * 3 + [False] * 3
    assert [i.id for i in infos] == [f"trained:s{n}" for n in range(6)]


def test_the_hello_of_a_node_with_every_builtin_fits_one_frame() -> None:
    config = NodeConfig("relay", 5678, "t" * 64, "node")
    registry = build_registry(None)
    caps = build_capabilities(config, registry, torch.device("cpu"), installed_methods())
    assert caps.methods == ("gatys", "fast", "arbitrary")
    frame = Connection(Role.NODE).send(Hello((1,), "node", "t" * 64, "v", caps))
    assert len(frame) < DEFAULT_MAX_FRAME_SIZE
