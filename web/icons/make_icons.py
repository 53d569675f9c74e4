"""Draw the home-screen icons beside this file (icon-192.png, icon-512.png) once, with Pillow.

The page has no build step: run this by hand when the mark changes and commit the PNGs.
The mark is favicon.svg's: a violet-to-coral disc with a white brush stroke, drawn on a full
square (maskable: the disc sits inside the safe circle).
"""

from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent
VIOLET, CORAL = (124, 92, 255), (255, 122, 89)


def icon(side: int) -> Image.Image:
    """The mark at `side` pixels, drawn at 4× and scaled down for smooth edges."""
    big = side * 4
    ramp = Image.linear_gradient("L").resize((big, big))
    disc = Image.composite(
        Image.new("RGB", (big, big), CORAL), Image.new("RGB", (big, big), VIOLET), ramp
    )
    img = Image.new("RGB", (big, big), (250, 249, 255))
    mask = Image.new("L", (big, big), 0)
    ImageDraw.Draw(mask).ellipse([big * 0.08, big * 0.08, big * 0.92, big * 0.92], fill=255)
    img.paste(disc, mask=mask)
    unit = big / 32
    stroke = [(9, 20), (12, 11), (20, 8), (24, 12), (19, 12), (15, 15), (13, 21)]
    ImageDraw.Draw(img).polygon([(x * unit, y * unit) for x, y in stroke], fill=(255, 255, 255))
    return img.resize((side, side), Image.Resampling.LANCZOS)


def main() -> None:
    """Write both sizes."""
    OUT.mkdir(exist_ok=True)
    for side in (192, 512):
        icon(side).save(OUT / f"icon-{side}.png", optimize=True)


if __name__ == "__main__":
    main()
