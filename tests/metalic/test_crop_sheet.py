"""metalic/crop_sheet.py: the same centre crop of each image, side by side."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metalic.crop_sheet import CROP, TILE, Tile, crop_box, enlarge, render, sheet_size, tile_origin


class TestCropBox:
    def test_large_image_gives_the_centre_128_square_twice_as_large(self):
        assert crop_box(256, 384) == (128, 64, 128, 2)

    def test_one_pixel_image_is_one_pixel_drawn_at_tile_size(self):
        assert crop_box(1, 1) == (0, 0, 1, TILE)

    @settings(max_examples=60, deadline=None)
    @given(height=st.integers(1, 600), width=st.integers(1, 600))
    def test_the_box_is_inside_the_image_and_the_tile_at_most_tile_size(self, height, width):
        box = crop_box(height, width)
        assert box.side == min(CROP, height, width)
        assert 0 <= box.left and box.left + box.side <= width and 0 <= box.top and box.top + box.side <= height
        assert box.side * box.zoom <= max(TILE, box.side) and box.zoom >= 1


class TestRender:
    @settings(max_examples=15, deadline=None)
    @given(height=st.integers(1, 160), width=st.integers(1, 160), n=st.integers(1, 5))
    def test_each_tile_holds_its_image_crop_and_the_sheet_has_its_size(self, height, width, n):
        rng = np.random.default_rng(height * 1000 + width)
        images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(n)]
        sheet = np.asarray(render([Tile(im, f"t{i}", "detail") for i, im in enumerate(images)], "title"))
        box = crop_box(height, width)
        assert sheet.shape[1::-1] == sheet_size(n, box)
        tile = box.side * box.zoom
        for i, im in enumerate(images):
            x, y = tile_origin(i, box)
            assert np.array_equal(sheet[y:y + tile, x:x + tile], enlarge(im, box))

    def test_images_of_different_sizes_or_none_are_refused(self):
        with pytest.raises(ValueError, match="same size"):
            render([Tile(np.zeros((8, 8, 3), np.uint8), "a", ""), Tile(np.zeros((8, 9, 3), np.uint8), "b", "")], "")
        with pytest.raises(ValueError, match="at least one"):
            render([], "")
