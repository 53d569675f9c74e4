"""Training photos: any folder of JPEG/PNG files, searched recursively.

Files are opened lazily, so a large folder starts at once; a file that turns out to be
unreadable is skipped with one warning and another photo takes its place in the batch.
"""

import logging
import random
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from gpu_node.errors import BadInputError, ImageError
from gpu_node.images import open_image
from gpu_node.tensors import image_to_tensor

log = logging.getLogger(__name__)

PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
# Training photos are scaled down to a few hundred pixels; refuse giant files early.
MAX_PIXELS = 40_000_000


def find_photos(root: Path) -> list[Path]:
    """Every JPEG/PNG under `root`, sorted; BadInputError if there are none."""
    if not root.is_dir():
        raise BadInputError(f"dataset {root} is not a folder")
    photos = sorted(
        p for p in root.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file()
    )
    if not photos:
        raise BadInputError(f"dataset {root} holds no .jpg, .jpeg or .png files")
    return photos


def square_crop(image: Image.Image, size: int, rng: random.Random) -> Image.Image:
    """Scale the short side to `size`, then cut a random `size` x `size` square."""
    scale = size / min(image.size)
    w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize(
        (w, h), Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS
    )
    left, top = rng.randint(0, w - size), rng.randint(0, h - size)
    return image.crop((left, top, left + size, top + size))


class PhotoDataset(Dataset[torch.Tensor]):
    """Random square crops [3, size, size] in 0..1 of the photos under a folder."""

    def __init__(self, root: Path, size: int, seed: int = 0) -> None:
        self.photos = find_photos(root)
        self.size = size
        self._rng = random.Random(seed)
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.photos)

    def __getitem__(self, index: int) -> torch.Tensor:
        for attempt in range(len(self.photos)):
            i = (index + attempt) % len(self.photos)
            if i in self._bad:
                continue
            try:
                image = open_image(self.photos[i], max_pixels=MAX_PIXELS)
            except ImageError as exc:
                self._bad.add(i)
                log.warning("skipping unreadable training photo: %s", exc)
                continue
            return image_to_tensor(square_crop(image, self.size, self._rng))[0]
        raise BadInputError(f"none of the {len(self.photos)} photos in the dataset can be read")
