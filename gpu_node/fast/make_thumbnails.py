"""Render gallery thumbnails with our own networks, all from one shipped photo.

    python -m gpu_node thumbnails

The built-in thumbnails are committed rather than rendered at start-up: a node then
starts without running 26 networks, and every node advertises byte-identical pictures.
Re-run this after changing the network or the names. Training renders a trained style's
thumbnail from the same photo (`render_thumbnail`), so the whole gallery shows one cat.
"""

import functools
import logging
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import torch

from gpu_node.fast.gallery import BUILTIN_STYLES, THUMBNAIL_PACKAGE
from gpu_node.fast.multistyle import NUM_STYLES, load_multistyle
from gpu_node.images import encode_jpeg, open_image, resize_long_side
from gpu_node.tensors import image_to_tensor, tensor_to_image

THUMBNAIL_SIDE = 192
RENDER_SIDE = 480
SOURCE_PHOTO = "source-photo.jpg"  # chelsea.png from scikit-image's data set, CC0
OUT_DIR = Path(__file__).parent / "thumbnails"

log = logging.getLogger(__name__)

Stylizer = Callable[[torch.Tensor], torch.Tensor]


def source_photo() -> torch.Tensor:
    """The shipped thumbnail photo as a [1, 3, H, W] tensor at render size."""
    data = resources.files(THUMBNAIL_PACKAGE).joinpath(SOURCE_PHOTO).read_bytes()
    return image_to_tensor(resize_long_side(open_image(data), RENDER_SIDE))


def render_thumbnail(stylize: Stylizer, device: torch.device | None = None) -> bytes:
    """JPEG bytes of the source photo run through `stylize` (tensor in 0..1 -> tensor)."""
    photo = source_photo().to(device or torch.device("cpu"))
    with torch.inference_mode():
        result = tensor_to_image(stylize(photo).float())
    return encode_jpeg(resize_long_side(result, THUMBNAIL_SIDE), quality=85)


def render_builtin_thumbnails(out_dir: Path = OUT_DIR) -> list[Path]:
    """Write one small JPEG per built-in style."""
    net = load_multistyle()
    written = []
    for style in BUILTIN_STYLES:
        weights = torch.zeros(NUM_STYLES)
        weights[style.index] = 1.0
        path = out_dir / style.thumbnail_file
        path.write_bytes(render_thumbnail(functools.partial(net.stylize, weights=weights)))
        written.append(path)
        log.info("wrote %s", path)
    return written
