"""Property tests of the image policy (codec/image.py): typed errors on crafted input, limits from the header.

Every input either passes the whole policy or raises the codec's ImageError
(ImageTooLargeError past the limits, UnsupportedImageModeError for a pixel
format it refuses), never another exception; and the pixel limits are
decided from the header alone, before a pixel is decoded.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codec.constants import DEFAULT_MAX_PIXELS, MAX_DIMENSION
from codec.errors import ImageError, ImageTooLargeError, UnsupportedImageModeError
from codec.image import PIXEL_CEILING, SUPPORTED_MODES, load_image, prepare_image, probe_image
from tests.support.images import FILE_FORMATS, file_bytes, image_in_mode, make_image, png_header_only
from tests.support.properties import examples

_SEED_FILES = [data for mode in sorted(SUPPORTED_MODES | {"F"}) for fmt in FILE_FORMATS
               if (data := file_bytes(image_in_mode(9, 7, mode, seed=2), fmt)) is not None]
"""One small file of every mode in every format that holds it (and a float TIFF, which the policy refuses)."""


@st.composite
def crafted_files(draw) -> bytes:
    """A valid file with bytes overwritten, inserted or cut off: what a fuzzer or an attacker sends."""
    data = bytearray(draw(st.sampled_from(_SEED_FILES)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        edit = draw(st.sampled_from(("set", "insert", "cut")))
        if edit == "set":
            data[at] = draw(st.integers(0, 255))
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[max(at, 8):]
    return bytes(data)


class TestCraftedInput:
    @given(data=crafted_files())
    @settings(max_examples=examples(1000), suppress_health_check=[HealthCheck.too_slow])
    def test_crafted_files_pass_the_policy_or_raise_image_error(self, data):
        try:
            info = probe_image(data, 1 << 16)
        except ImageError:
            return
        rgb = load_image(data, 1 << 16).rgb  # what the check accepts, the encoder's load accepts too
        assert rgb.shape[2] == 3 and sorted(rgb.shape[:2]) == sorted((info.width, info.height))  # EXIF may turn it

    @pytest.mark.parametrize("mode", sorted(SUPPORTED_MODES))
    def test_every_supported_mode_passes_as_a_pillow_image(self, mode):
        assert prepare_image(image_in_mode(5, 3, mode)).rgb.shape == (3, 5, 3)

    def test_float_samples_are_refused_with_their_own_type(self):
        with pytest.raises(UnsupportedImageModeError, match="floating-point"):
            probe_image(file_bytes(image_in_mode(4, 4, "F"), "TIFF"))

    def test_premultiplied_gray_alpha_is_composited(self):
        # Pillow converts La to LA only; the policy used to fail on it with a bare ValueError
        im = make_image(6, 4, "RGBA").convert("LA").convert("La")
        assert prepare_image(im).rgb.shape == (4, 6, 3)


class TestPixelLimits:
    @given(w=st.one_of(st.integers(0, MAX_DIMENSION + 2), st.sampled_from((1, MAX_DIMENSION, MAX_DIMENSION + 1))),
           h=st.one_of(st.integers(0, 64), st.sampled_from((1, MAX_DIMENSION, MAX_DIMENSION + 1))),
           max_pixels=st.one_of(st.integers(1, 1 << 20), st.sampled_from((DEFAULT_MAX_PIXELS, PIXEL_CEILING))))
    @settings(max_examples=examples(150))
    def test_the_limits_are_decided_from_the_header(self, w, h, max_pixels):
        data = png_header_only(w, h)  # claims w x h, carries 64 bytes of rows: a bomb, when w x h is large
        started = time.perf_counter()
        try:
            probe_image(data, max_pixels)
        except ImageError as e:
            refused = e
        else:
            refused = None
        if w == 0 or h == 0:
            assert type(refused) is ImageError
        elif w > MAX_DIMENSION or h > MAX_DIMENSION or w * h > max_pixels:
            assert type(refused) is ImageTooLargeError
            assert time.perf_counter() - started < 0.5  # nothing was decoded
        else:  # under the limits: decoded, or refused for its missing rows, never as too large
            assert refused is None or type(refused) is ImageError

    @pytest.mark.parametrize("slack", [-1, 0, 1])
    def test_a_real_image_at_the_limit(self, slack):
        data = file_bytes(make_image(32, 24), "PNG")
        limit = 32 * 24 + slack
        if slack < 0:
            with pytest.raises(ImageTooLargeError):
                probe_image(data, limit)
        else:
            assert probe_image(data, limit).width == 32
