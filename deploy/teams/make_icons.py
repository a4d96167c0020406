"""Draw the Teams app icons: color.png (192x192) and outline.png (32x32), beside this script.

The mark is a speech bubble with an exclamation mark: "say what happened". Run it again after changing
the drawing (`.venv/bin/python deploy/teams/make_icons.py`) and commit both PNG files.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
#: The same colour as `accentColor` in manifest.template.json.
ACCENT = "#1D4E89"
WHITE = (255, 255, 255)
#: Shapes are drawn this many times larger, then scaled down: smooth edges.
SUPERSAMPLE = 8


def _bubble(draw: ImageDraw.ImageDraw, box: tuple[float, float, float, float], fill: int) -> None:
    """A rounded speech bubble filling `box`, its tail at the bottom left."""
    left, top, right, bottom = box
    width, height = right - left, bottom - top
    body_bottom = top + height * 0.78
    draw.rounded_rectangle((left, top, right, body_bottom), radius=width * 0.22, fill=fill)
    draw.polygon(
        [
            (left + width * 0.22, body_bottom - 1),
            (left + width * 0.50, body_bottom - 1),
            (left + width * 0.16, bottom),
        ],
        fill=fill,
    )


def _exclamation(draw: ImageDraw.ImageDraw, centre_x: float, top: float, bottom: float, fill: int) -> None:
    """An exclamation mark: a rounded bar above a dot, between `top` and `bottom`."""
    height = bottom - top
    half = height * 0.115
    bar_bottom = top + height * 0.66
    draw.rounded_rectangle((centre_x - half, top, centre_x + half, bar_bottom), radius=half, fill=fill)
    dot = height * 0.135
    dot_centre = bottom - dot
    draw.ellipse((centre_x - dot, dot_centre - dot, centre_x + dot, dot_centre + dot), fill=fill)


def _mask(size: int, draw_shapes) -> Image.Image:
    """An anti-aliased greyscale mask of `size` pixels drawn by `draw_shapes(draw, scale)`."""
    big = Image.new("L", (size * SUPERSAMPLE, size * SUPERSAMPLE), 0)
    draw_shapes(ImageDraw.Draw(big), SUPERSAMPLE)
    return big.resize((size, size), Image.Resampling.LANCZOS)


def color_icon() -> Image.Image:
    """192x192, full bleed: a white bubble with an accent-coloured exclamation mark on the accent colour."""
    size = 192

    def bubble(draw: ImageDraw.ImageDraw, s: int) -> None:
        _bubble(draw, (44 * s, 46 * s, 148 * s, 150 * s), fill=255)

    def mark(draw: ImageDraw.ImageDraw, s: int) -> None:
        _exclamation(draw, 96 * s, 60 * s, 118 * s, fill=255)

    image = Image.new("RGB", (size, size), ACCENT)
    image.paste(Image.new("RGB", (size, size), WHITE), mask=_mask(size, bubble))
    image.paste(Image.new("RGB", (size, size), ACCENT), mask=_mask(size, mark))
    return image


def outline_icon() -> Image.Image:
    """32x32: a white bubble outline with an exclamation mark on a fully transparent background."""
    size = 32

    def shapes(draw: ImageDraw.ImageDraw, s: int) -> None:
        stroke = 2.6 * s
        outer = (1 * s, 1.5 * s, 31 * s, 31.5 * s)
        _bubble(draw, outer, fill=255)
        # Hollow the bubble out with a smaller one, leaving a white line of `stroke` width.
        width = outer[2] - outer[0]
        body_bottom = outer[1] + (outer[3] - outer[1]) * 0.78
        draw.rounded_rectangle(
            (outer[0] + stroke, outer[1] + stroke, outer[2] - stroke, body_bottom - stroke),
            radius=width * 0.22 - stroke,
            fill=0,
        )
        _exclamation(draw, 16 * s, 6.2 * s, 21.2 * s, fill=255)

    # Every pixel is white; only the alpha channel carries the shape.
    image = Image.new("RGBA", (size, size), WHITE + (0,))
    image.putalpha(_mask(size, shapes))
    return image


def main() -> None:
    color_icon().save(HERE / "color.png", optimize=True)
    outline_icon().save(HERE / "outline.png", optimize=True)
    print(f"wrote {HERE / 'color.png'} and {HERE / 'outline.png'}")


if __name__ == "__main__":
    main()
