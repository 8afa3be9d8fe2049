"""service/baselines.py: JPEG, WebP and AVIF fitted under a byte budget."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service import baselines


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
        budget = len(baselines.encode(name, Image.fromarray(rgb), 50))
        result = baselines.at_budget(name, rgb, budget)
        assert result.fits and len(result.data) <= budget
        assert result.quality >= 50 or len(baselines.encode(name, Image.fromarray(rgb), 50)) > budget
        if result.quality < baselines.CODECS[name].quality_max:
            assert len(baselines.encode(name, Image.fromarray(rgb), result.quality + 1)) > budget

    @pytest.mark.parametrize("name", AVAILABLE)
    def test_psnr_is_measured_on_the_decoded_file(self, name):
        rgb = photo()
        result = baselines.at_budget(name, rgb, 2000)
        decoded = np.asarray(Image.open(io.BytesIO(result.data)).convert("RGB"))
        assert result.psnr == pytest.approx(baselines.psnr(rgb, decoded))
        assert 15 < result.psnr < 60

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


class TestPsnr:
    def test_identical_images_give_the_cap(self):
        rgb = photo()
        assert baselines.psnr(rgb, rgb) == baselines.PSNR_CAP_DB

    def test_one_level_everywhere_is_48_13_db(self):
        a = np.zeros((8, 8, 3), np.uint8)
        assert baselines.psnr(a, a + 1) == pytest.approx(48.1308, abs=1e-4)

    def test_shapes_must_match(self):
        with pytest.raises(ValueError, match="differ in shape"):
            baselines.psnr(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))


def test_jpeg_and_webp_are_always_available():
    assert {"jpeg", "webp"} <= set(AVAILABLE)
    assert AVAILABLE == [name for name in baselines.CODECS if name in AVAILABLE]
