"""Putting panels together: titled tiles in a grid, colour maps for scalar fields, PNG bytes out."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)


def scalar_rgb(values: np.ndarray, vmax: float, cmap: str = "viridis") -> np.ndarray:
    """uint8 [H, W, 3] of a scalar field on a fixed scale [0, vmax] (fixed, so pictures of different
    iterations compare)."""
    from matplotlib import colormaps

    scaled = np.clip(np.asarray(values, dtype=np.float64) / max(vmax, 1e-12), 0.0, 1.0)
    return (colormaps[cmap](scaled)[..., :3] * 255).round().astype(np.uint8)


def resize_rgb(image: np.ndarray, height: int, width: int, nearest: bool) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    method = Image.NEAREST if nearest else Image.BILINEAR
    return np.asarray(Image.fromarray(image).resize((width, height), method))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font without sizes
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """Greedy word wrap to `width` pixels (a word longer than the width gets its own line)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def compose_grid(
    rows: Sequence[Sequence[np.ndarray]],
    column_titles: Sequence[str],
    row_titles: Sequence[str] = (),
    title: str = "",
    gap: int = 6,
    font_size: int = 12,
) -> np.ndarray:
    """One uint8 [H, W, 3] picture: an optional title, the column titles (wrapped to the tile width),
    then per row its title line and its tiles. Tiles of one row must share a height; the column width is
    the widest tile."""
    if not rows:
        raise ValueError("compose_grid needs at least one row")
    ncols = max(len(r) for r in rows)
    tile_w = max(t.shape[1] for r in rows for t in r)
    width = ncols * tile_w + (ncols + 1) * gap
    font = _font(font_size)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = font_size + 4
    title_lines = _wrap(scratch, title, font, width - 2 * gap) if title else []
    col_lines = [_wrap(scratch, t, font, tile_w) for t in column_titles[:ncols]]
    header = gap + line * len(title_lines) + line * max((len(c) for c in col_lines), default=0) + gap
    heights = [max(t.shape[0] for t in r) for r in rows]
    row_line = line if row_titles else 0
    height = header + sum(h + row_line + gap for h in heights) + gap
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    y = gap
    for text in title_lines:
        draw.text((gap, y), text, fill=TEXT, font=font)
        y += line
    for c, lines in enumerate(col_lines):
        for k, text in enumerate(lines):
            draw.text((gap + c * (tile_w + gap), y + k * line), text, fill=TEXT, font=font)
    y = header
    for r, (tiles, tile_h) in enumerate(zip(rows, heights)):
        if r < len(row_titles):
            draw.text((gap, y), row_titles[r], fill=TEXT, font=font)
        y += row_line
        for c, tile in enumerate(tiles):
            canvas.paste(Image.fromarray(np.ascontiguousarray(tile)), (gap + c * (tile_w + gap), y))
        y += tile_h + gap
    return np.asarray(canvas)


def png_bytes(image: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    """PNG of an RGB [H, W, 3] uint8 image, or of a uint8 [H, W] index map (paletted when a [256, 3]
    palette is given: the pixel values stay the class ids, viewers show the colours)."""
    image = np.ascontiguousarray(image)
    if image.ndim == 2:
        if image.dtype != np.uint8:
            raise ValueError(f"index maps are written as uint8 PNGs, given {image.dtype}")
        pil = Image.fromarray(image)  # mode L
        if palette is not None:  # putpalette turns an L image into a P image with the same indices
            pil.putpalette(np.asarray(palette, dtype=np.uint8).reshape(-1).tolist(), rawmode="RGB")
    elif image.ndim == 3 and image.shape[2] == 3:
        pil = Image.fromarray(image.astype(np.uint8))
    else:
        raise ValueError(f"png_bytes takes [H, W] or [H, W, 3] arrays, given shape {image.shape}")
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()
