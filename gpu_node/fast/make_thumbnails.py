"""Render the built-in gallery's thumbnails with our own network.

    python -m gpu_node.fast.make_thumbnails --photo ../shared/images/content/chelsea.png

They are committed rather than rendered at start-up: a node then starts without running
26 networks, and every node advertises byte-identical pictures. Re-run this after
changing the network or the names.
"""

import argparse
import logging
from pathlib import Path

import torch

from gpu_node.fast.gallery import BUILTIN_STYLES
from gpu_node.fast.multistyle import NUM_STYLES, load_multistyle
from gpu_node.images import encode_jpeg, open_image, resize_long_side
from gpu_node.tensors import image_to_tensor, tensor_to_image

THUMBNAIL_SIDE = 192
RENDER_SIDE = 480
OUT_DIR = Path(__file__).parent / "thumbnails"

log = logging.getLogger(__name__)


def render_thumbnails(photo: Path, out_dir: Path = OUT_DIR) -> list[Path]:
    """Stylise `photo` with each built-in style and write one small JPEG per style."""
    net = load_multistyle()
    image = image_to_tensor(resize_long_side(open_image(photo), RENDER_SIDE))
    written = []
    with torch.inference_mode():
        for style in BUILTIN_STYLES:
            weights = torch.zeros(NUM_STYLES)
            weights[style.index] = 1.0
            result = tensor_to_image(net.stylize(image, weights))
            path = out_dir / style.thumbnail_file
            path.write_bytes(encode_jpeg(resize_long_side(result, THUMBNAIL_SIDE), quality=85))
            written.append(path)
            log.info("wrote %s", path)
    return written


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photo", type=Path, required=True, help="the photo to stylise")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for old in args.out_dir.glob("*.jpg"):
        old.unlink()
    render_thumbnails(args.photo, args.out_dir)


if __name__ == "__main__":
    main()
