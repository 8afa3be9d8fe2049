"""Property tests of the encoder on the shipped model: no accepted input crashes it, every result obeys the rule.

Drawn: image sizes from 1x1 to 48x48 (the container's header alone is
hundreds of bpp on one pixel), every Pillow mode the image policy accepts,
as a file of each format that can hold it or as a Pillow image, every target
kind (bpp, λ, PSNR, none) with the ends of its range, every preset and stage
switch. In the suite the refinement and λ_k steps are short and the cases
few and derandomized; docs/BENCHMARKS.md records the long runs
(``METALIC_HYPOTHESIS_PROFILE=explore METALIC_PROPERTY_SCALE=N``, the presets'
own step counts) and what they found.

The rule (codec.adapt.goal.Goal): the file decodes to exactly what the
encoder measured; its size, bpp and PSNR are the real ones; the final file
ranks no worse under the target than the plain forward pass; and
``target_reached`` says whether the target was met, with a warning when not.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from codec.adapt.goal import Goal
from codec.errors import ImageTooLargeError, OptionsError
from codec.image import load_image
from codec.metrics import psnr
from codec.options import MAX_LAMBDA_STEPS, MAX_REFINE_STEPS, PRESETS, ROUNDINGS, EncodeOptions, validate_options
from codec.pipeline import decode
from tests.support.images import make_image, png_bytes
from tests.support.properties import encode_options, examples, images

SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large]


def assert_obeys_the_rule(backend, res, source, opts: EncodeOptions, width: int, height: int) -> None:
    meta = res.metadata
    rgb = load_image(source).rgb
    assert (meta["width"], meta["height"]) == (width, height)
    assert meta["bytes"] == len(res.bitstream)
    assert meta["bpp"] == len(res.bitstream) * 8 / (width * height)
    # the file is what was measured: decoded here, bit for bit, and scored against the input
    assert np.array_equal(decode(res.bitstream).rgb, res.reconstruction)
    assert meta["psnr"] == psnr(rgb, res.reconstruction)
    goal = Goal.of(opts, meta["lmbda"], rate_control=opts.rate_control)
    forward = meta["stages"]["forward"]
    assert goal.rank(meta["bpp"], meta["psnr"], size=meta["bytes"]) <= \
        goal.rank(forward["bpp"], forward["psnr"], size=forward["bytes"]), meta["stages"]
    reached = Goal.of(opts, 0.0).reached(meta["bpp"], meta["psnr"])
    assert meta["target_reached"] is reached
    if reached is False:
        assert any("out of reach" in w for w in meta["warnings"]), meta["warnings"]
    if opts.lmbda is not None:  # the stages keep the rate index; a λ beyond the model's range codes at its end
        lo, hi = backend.rate_range()
        assert meta["lmbda"] == backend.rate_lambda(min(hi, max(lo, backend.rate_index(opts.lmbda))))
    json.dumps(meta)  # the worker stores it as JSON
    assert all(math.isfinite(meta[k]) for k in ("bpp", "psnr", "lmbda"))


class TestEncodeProperties:
    @given(image=images(), options=encode_options())
    @example(image=(png_bytes(make_image(1, 1)), 1, 1), options={"target_bpp": 0.5, "preset": "balanced",
                                                                 "refine_steps": 4, "lambda_steps": 2})
    @example(image=(png_bytes(make_image(2, 3)), 2, 3), options={"target_bpp": 0.5, "preset": "max",
                                                                 "refine_steps": 4, "lambda_steps": 2})
    @example(image=(png_bytes(make_image(48, 48)), 48, 48), options={"target_bpp": 0.01, "preset": "balanced",
                                                                     "refine_steps": 4, "lambda_steps": 2})
    @settings(max_examples=examples(60), suppress_health_check=SLOW)
    def test_every_accepted_encode_obeys_the_rule(self, encoder, image, options):
        source, width, height = image
        opts = validate_options(options)
        kind = next((k for k in ("target_bpp", "lmbda", "target_psnr") if k in options), "default λ")
        event(f"target {kind}, preset {opts.preset}")
        event(f"source {getattr(source, 'mode', None) or 'file'}")
        event("size " + ("1 px side" if min(width, height) == 1 else "2-8 px" if max(width, height) <= 8 else "up to 48"))
        assert_obeys_the_rule(encoder.backend, encoder.encode(source, opts), source, opts, width, height)

    @given(st.dictionaries(
        st.sampled_from([*EncodeOptions.__dataclass_fields__, "target", "steps", ""]),
        st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                  st.text(max_size=12), st.sampled_from([*PRESETS, *ROUNDINGS, "metalic-vr"])),
        max_size=6))
    @settings(max_examples=examples(300))
    def test_options_normalize_or_raise_options_error(self, options):
        try:
            opts = validate_options(options)
        except OptionsError:
            return
        targets = [t for t in (opts.target_bpp, opts.lmbda, opts.target_psnr) if t is not None]
        assert len(targets) <= 1 and all(math.isfinite(t) for t in targets)
        assert 0 <= opts.refine_steps <= MAX_REFINE_STEPS and 0 <= opts.lambda_steps <= MAX_LAMBDA_STEPS
        assert opts.preset in PRESETS and opts.rounding in ROUNDINGS

    @given(w=st.integers(1, 12), h=st.integers(1, 12), slack=st.sampled_from((-1, 0)))
    @settings(max_examples=examples(8), suppress_health_check=SLOW)
    def test_the_encoder_takes_images_up_to_exactly_its_pixel_limit(self, w, h, slack):
        from codec.pipeline import Encoder

        encoder = Encoder(device="cpu", max_pixels=max(1, w * h + slack))  # the model itself is cached
        data = png_bytes(make_image(w, h))
        if w * h > encoder.max_pixels:
            with pytest.raises(ImageTooLargeError):
                encoder.encode(data, {"preset": "fast"})
        else:
            assert encoder.encode(data, {"preset": "fast"}).metadata["width"] == w
