"""One PNG of the same crop from each codec's decoded image, side by side and labelled.

What ``metalic demo`` writes per target, so that the artefacts each codec makes
at the same number of bytes can be seen at a glance::

    +----------------------------------------------------------------------+
    | title: target, crop position and zoom, byte budget                   |
    | +----------+ +----------+ +----------+ +----------+ +----------+     |
    | | original | | metalic  | |   jpeg   | |   webp   | |   avif   |     |
    | +----------+ +----------+ +----------+ +----------+ +----------+     |
    |  label        label        label        label        label           |
    +----------------------------------------------------------------------+

The crop is the centre square of side ``min(CROP, height, width)``, enlarged by
an integer factor with nearest-neighbour sampling so that single pixels and
block edges stay visible rather than being smoothed away.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CROP = 128
"""Pixels. Largest side of the square cut from each image."""

TILE = 256
"""Pixels. Largest side of a tile on the sheet; the crop is enlarged by ``TILE // crop`` (at least 1)."""

GAP = 8
"""Pixels. Space around and between tiles."""

TITLE_HEIGHT = 24
"""Pixels. Band above the tiles for the title."""

LABEL_HEIGHT = 40
"""Pixels. Band under each tile for its two label lines."""

FONT_SIZE = 13
"""Points. Label and title text."""


class Tile(NamedTuple):
    """One image on the sheet: its pixels and the two lines written under it."""

    rgb: np.ndarray  # (H, W, 3) uint8, the whole decoded image
    title: str
    detail: str


class CropBox(NamedTuple):
    left: int
    top: int
    side: int
    zoom: int


def crop_box(height: int, width: int) -> CropBox:
    """The centre square every tile shows, and the zoom that brings it near :data:`TILE`."""
    side = min(CROP, height, width)
    return CropBox((width - side) // 2, (height - side) // 2, side, max(1, TILE // side))


def sheet_size(n_tiles: int, box: CropBox) -> tuple[int, int]:
    """(width, height) in pixels of a sheet of ``n_tiles`` tiles of ``box``."""
    tile = box.side * box.zoom
    return n_tiles * tile + (n_tiles + 1) * GAP, TITLE_HEIGHT + tile + LABEL_HEIGHT + GAP


def enlarge(rgb: np.ndarray, box: CropBox) -> np.ndarray:
    """The crop of ``box`` from an HxWx3 image, each pixel repeated ``zoom`` times in both directions."""
    crop = rgb[box.top:box.top + box.side, box.left:box.left + box.side]
    return np.repeat(np.repeat(crop, box.zoom, axis=0), box.zoom, axis=1)


def tile_origin(index: int, box: CropBox) -> tuple[int, int]:
    """(x, y) of the top-left pixel of tile ``index`` on the sheet."""
    return GAP + index * (box.side * box.zoom + GAP), TITLE_HEIGHT


def render(tiles: list[Tile], title: str) -> Image.Image:
    """The sheet: ``tiles`` left to right under ``title``; every image must have the same size."""
    if not tiles:
        raise ValueError("a crop sheet needs at least one tile")
    height, width = tiles[0].rgb.shape[:2]
    if any(t.rgb.shape != tiles[0].rgb.shape for t in tiles):
        raise ValueError("every tile of a crop sheet must come from an image of the same size")
    box = crop_box(height, width)
    sheet = Image.new("RGB", sheet_size(len(tiles), box), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=FONT_SIZE)
    draw.text((GAP, 4), title, fill="black", font=font)
    for i, tile in enumerate(tiles):
        x, y = tile_origin(i, box)
        sheet.paste(Image.fromarray(enlarge(tile.rgb, box), "RGB"), (x, y))
        below = y + box.side * box.zoom + 4
        draw.text((x, below), tile.title, fill="black", font=font)
        draw.text((x, below + FONT_SIZE + 4), tile.detail, fill="dimgray", font=font)
    return sheet
