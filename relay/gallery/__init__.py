"""The built-in painting styles (public domain; credits in SOURCES.md).

A job with style `painting:NAME` sends that painting, scaled to the job's size, to the node
as its style image; the methods that take a style image (gatys, arbitrary) can use them.
"""

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
PREFIX = "painting:"
METHODS = ("gatys", "arbitrary")
"""Methods that take a painting as their style image."""


@dataclass(frozen=True)
class Painting:
    """One gallery painting and its credits."""

    key: str
    title: str
    artist: str
    year: str

    @property
    def id(self) -> str:
        """The style id clients use, `painting:<key>`."""
        return PREFIX + self.key

    @property
    def image_path(self) -> Path:
        """The painting, at most 1024 pixels on the long side."""
        return HERE / f"{self.key}.jpg"

    @property
    def thumbnail_path(self) -> Path:
        """A thumbnail at most 256 pixels on the long side."""
        return HERE / f"{self.key}.thumb.jpg"


PAINTINGS: tuple[Painting, ...] = (
    Painting("starry_night", "The Starry Night", "Vincent van Gogh", "1889"),
    Painting("the_scream", "The Scream", "Edvard Munch", "1893"),
    Painting("woman_with_a_hat", "Woman with a Hat", "Henri Matisse", "1905"),
    Painting("great_wave", "The Great Wave off Kanagawa", "Katsushika Hokusai", "c. 1831"),
    Painting("udnie", "Udnie", "Francis Picabia", "1913"),
)
_BY_ID = {p.id: p for p in PAINTINGS}


def find(style_id: str) -> Painting | None:
    """The painting with this style id, or None."""
    return _BY_ID.get(style_id)
