"""codec/baselines.py: JPEG, WebP and AVIF at a quality and fitted under a byte budget."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from codec import baselines, metrics


def photo(width: int = 96, height: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height) + 64], -1)
    return np.clip(rgb + rng.normal(0, 8, rgb.shape), 0, 255).astype(np.uint8)


AVAILABLE = baselines.available()


class TestAtBudget:
    @pytest.mark.parametrize("name", AVAILABLE)
    def test_file_fits_and_one_quality_more_does_not(self, name):
        rgb = photo()
        budget = len(baselines.encode(name, rgb, 50))
        result = baselines.at_budget(name, rgb, budget)
        assert result.fits and len(result.data) <= budget
        assert result.quality >= 50 or len(baselines.encode(name, rgb, 50)) > budget
        if result.quality < baselines.CODECS[name].quality_max:
            assert len(baselines.encode(name, rgb, result.quality + 1)) > budget

    @pytest.mark.parametrize("name", AVAILABLE)
    def test_psnr_and_pixels_are_those_of_the_decoded_file(self, name):
        rgb = photo()
        result = baselines.at_budget(name, rgb, 2000)
        decoded = np.asarray(Image.open(io.BytesIO(result.data)).convert("RGB"))
        assert Image.open(io.BytesIO(result.data)).format == baselines.CODECS[name].pil_format
        assert np.array_equal(result.rgb, decoded)
        assert result.psnr == metrics.psnr(rgb, decoded)
        assert 15 < result.psnr < 60

    @settings(max_examples=25, deadline=None)
    @given(budget=st.integers(1, 12_000))
    def test_any_budget_gives_the_largest_fitting_jpeg_or_the_smallest_file(self, budget):
        rgb = photo(48, 32)
        result = baselines.at_budget("jpeg", rgb, budget)
        assert result.data == baselines.encode("jpeg", rgb, result.quality)
        if result.fits:
            assert len(result.data) <= budget
            if result.quality < 95:
                assert len(baselines.encode("jpeg", rgb, result.quality + 1)) > budget
        else:
            assert result.quality == 1 and len(result.data) > budget

    def test_budget_below_the_smallest_file_returns_the_smallest_and_says_so(self):
        result = baselines.at_budget("jpeg", photo(), 10)
        assert result.fits is False
        assert result.quality == baselines.CODECS["jpeg"].quality_min

    def test_large_budget_gives_the_highest_quality(self):
        result = baselines.at_budget("jpeg", photo(), 10_000_000)
        assert result.fits and result.quality == baselines.CODECS["jpeg"].quality_max

    def test_unknown_codec_and_empty_budget_are_value_errors(self):
        with pytest.raises(ValueError, match="unknown baseline codec"):
            baselines.at_budget("jpeg2000", photo(), 1000)
        with pytest.raises(ValueError, match="at least 1"):
            baselines.at_budget("jpeg", photo(), 0)

    def test_compare_runs_every_available_codec_in_order(self):
        assert [b.codec for b in baselines.compare(photo(), 1500)] == AVAILABLE
        assert [b.codec for b in baselines.compare(photo(), 1500, ["webp"])] == ["webp"]


class TestEncode:
    def test_quality_out_of_range_or_not_an_integer_is_a_value_error(self):
        for quality in (0, 96, 50.5, "50", True):
            with pytest.raises(ValueError, match="quality must be an integer"):
                baselines.encode("jpeg", photo(), quality)

    def test_not_an_rgb_image_is_a_value_error(self):
        for bad in (np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32), np.zeros((0, 8, 3), np.uint8)):
            with pytest.raises(ValueError, match="HxWx3 uint8"):
                baselines.encode("jpeg", bad, 50)

    def test_options_override_the_defaults(self):
        rgb = photo()
        assert baselines.encode("jpeg", rgb, 75, {"subsampling": "4:4:4"}) != baselines.encode("jpeg", rgb, 75)

    def test_decode_gives_a_writable_rgb_copy(self):
        rgb_hat = baselines.decode(baselines.encode("webp", photo(), 60))
        assert rgb_hat.dtype == np.uint8 and rgb_hat.shape == (64, 96, 3) and rgb_hat.flags.writeable


def test_jpeg_and_webp_are_always_available():
    assert {"jpeg", "webp"} <= set(AVAILABLE)
    assert AVAILABLE == [name for name in baselines.CODECS if name in AVAILABLE]
