"""The contract the service and the worker rely on, run on the real codec and on the test stand-in.

The service and worker unit tests use tests/e2e/fake_codec.py; these checks
make sure it behaves like the codec where they look: the same image rules and
option schema, and results whose numbers are measured, not made up.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codec.errors import ImageError, ImageTooLargeError, OptionsError
from codec.metrics import psnr
from tests.support.images import make_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))


class RealCodec:
    name = "real"

    def __init__(self):
        from codec import image, options, pipeline

        self.image, self.options, self.pipeline = image, options, pipeline
        self.encoder = pipeline.Encoder(device="cpu")

    def probe_image(self, data, max_pixels):
        return self.image.probe_image(data, max_pixels)

    def validate_options(self, options):
        return self.options.validate_options(options).to_dict()

    def encode(self, data, options, progress=None):
        return self.encoder.encode(data, options, progress)

    def decode(self, data):
        return self.pipeline.decode(data, device="cpu")


class FakeCodec:
    name = "fake"

    def __init__(self):
        import fake_codec

        self.module = fake_codec
        self.encoder = fake_codec.Encoder()

    def probe_image(self, data, max_pixels):
        return self.module.probe_image(data, max_pixels)

    def validate_options(self, options):
        return self.module.validate_options(options)

    def encode(self, data, options, progress=None):
        return self.encoder.encode(data, options, progress)

    def decode(self, data):
        return self.module.decode(data)


@pytest.fixture(scope="module", params=["real", "fake"])
def codec(request):
    return RealCodec() if request.param == "real" else FakeCodec()


def encoded(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


class TestCodecContract:
    @pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LAB"])
    def test_probe_reports_size_mode_and_format(self, codec, mode):
        im = make_image(40, 24)
        im = im.convert(mode) if mode != "RGBA" else make_image(40, 24, "RGBA")
        info = codec.probe_image(encoded(im, "TIFF" if mode == "LAB" else "PNG"), 1 << 20)
        assert (info.width, info.height, info.mode) == (40, 24, mode)

    def test_probe_refuses_garbage_and_oversize(self, codec):
        with pytest.raises(ImageError):
            codec.probe_image(b"\x89PNG\r\n\x1a\n" + b"\0" * 40, 1 << 20)
        with pytest.raises(ImageTooLargeError):
            codec.probe_image(encoded(make_image(64, 64)), 1000)

    @pytest.mark.parametrize("options", [{}, {"target_bpp": 0.5}, {"preset": "fast", "rounding": "ste"},
                                         {"lmbda": 0.01, "lambda_steps": 2}])
    def test_options_normalize_like_the_codec(self, codec, options):
        from codec.options import validate_options

        assert codec.validate_options(options) == validate_options(options).to_dict()

    @pytest.mark.parametrize("options", [{"target_bpp": 0.5, "lmbda": 0.1}, {"refine_steps": -1},
                                         {"rounding": "up"}, {"fail": True}])
    def test_bad_options_raise_options_error(self, codec, options):
        with pytest.raises(OptionsError):
            codec.validate_options(options)

    def test_encode_metadata_is_measured_on_the_decoded_file(self, codec):
        im = make_image(48, 32)
        seen = []
        res = codec.encode(encoded(im), {"lmbda": 0.01, "preset": "fast"}, seen.append)
        meta = res.metadata
        assert meta["bytes"] == len(res.bitstream)
        assert meta["width"] == 48 and meta["height"] == 32
        assert meta["bpp"] == pytest.approx(8 * len(res.bitstream) / (48 * 32))
        decoded = codec.decode(res.bitstream).image.convert("RGB")
        assert decoded.size == (48, 32)
        assert meta["psnr"] == pytest.approx(psnr(np.asarray(im), np.asarray(decoded)), abs=1e-6)
        assert all("stage" in p for p in seen)
