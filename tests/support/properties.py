"""Property tests' cases: what they are drawn from, and how many (bounded in the suite, more in a long run).

``METALIC_PROPERTY_SCALE=N`` multiplies every property test's case count
(docs/BENCHMARKS.md records the long runs and what they found); with
``METALIC_HYPOTHESIS_PROFILE=explore`` the cases are new draws, and the encode
options also take the presets' own step counts instead of short ones.
"""

from __future__ import annotations

import math
import os

from hypothesis import strategies as st

from codec.constants import LAMBDA_MAX, LAMBDA_MIN
from codec.image import ALPHA_MODES, SUPPORTED_MODES
from codec.options import PRESETS, ROUNDINGS, TARGET_BPP_RANGE, TARGET_PSNR_RANGE
from tests.support.images import FILE_FORMATS, file_bytes, image_in_mode, make_image


def examples(in_suite: int) -> int:
    """max_examples of a property test: ``in_suite`` times ``METALIC_PROPERTY_SCALE`` (default 1)."""
    return in_suite * max(1, int(os.environ.get("METALIC_PROPERTY_SCALE", "1")))


def exploring() -> bool:
    """True in a long run (``METALIC_HYPOTHESIS_PROFILE=explore``): full preset step counts, new draws."""
    return os.environ.get("METALIC_HYPOTHESIS_PROFILE") == "explore"


MAX_SIDE = 48
"""Pixels. Largest side drawn: the max preset's 400 steps stay seconds, not minutes."""

SUITE_REFINE_STEPS = 6
"""Iterations. Most refinement steps a case draws in the suite (the presets run 72 and 400)."""

SUITE_LAMBDA_STEPS = 3
"""Iterations. Most λ_k steps a case draws in the suite (the presets run 5 and 20)."""


def _log_uniform(lo: float, hi: float):
    return st.floats(math.log(lo), math.log(hi)).map(lambda v: min(hi, max(lo, math.exp(v))))


def _with_ends(values, lo: float, hi: float):
    return st.one_of(st.sampled_from((lo, hi)), values)


TARGET_VALUES = {
    "target_bpp": _with_ends(_log_uniform(*TARGET_BPP_RANGE), *TARGET_BPP_RANGE),
    "lmbda": _with_ends(_log_uniform(LAMBDA_MIN, LAMBDA_MAX), LAMBDA_MIN, LAMBDA_MAX),
    "target_psnr": _with_ends(st.floats(*TARGET_PSNR_RANGE), *TARGET_PSNR_RANGE),
}
"""Target kind -> its values: the whole accepted range, its two ends drawn often."""

# the kind first, drawn evenly (st.one_of of the four dicts drew a bpp target for one case in sixteen)
TARGETS = st.sampled_from((*TARGET_VALUES, None)).flatmap(
    lambda kind: st.just({}) if kind is None else TARGET_VALUES[kind].map(lambda v: {kind: v}))


@st.composite
def encode_options(draw) -> dict:
    """A valid options dict: a target, a preset, any stage switches, short (or the preset's) step counts."""
    options = dict(draw(TARGETS), preset=draw(st.sampled_from(sorted(PRESETS))))
    for flag in ("refine", "adapt_lambda", "bias_search", "rate_control"):
        value = draw(st.sampled_from((None, True, False)))
        if value is not None:
            options[flag] = value
    full = exploring()
    refine_steps = draw(st.one_of(st.none(), st.integers(0, 40)) if full else st.integers(0, SUITE_REFINE_STEPS))
    lambda_steps = draw(st.one_of(st.none(), st.integers(0, 20)) if full else st.integers(0, SUITE_LAMBDA_STEPS))
    if refine_steps is not None:
        options["refine_steps"] = refine_steps
    if lambda_steps is not None:
        options["lambda_steps"] = lambda_steps
    rounding = draw(st.sampled_from((None, *ROUNDINGS)))
    if rounding is not None:
        options["rounding"] = rounding
    return options


@st.composite
def images(draw, max_side: int = MAX_SIDE, files_only: bool = False):
    """(source, width, height): a file in a format that holds the mode, or (unless ``files_only``)
    the Pillow image itself, as the Python API takes it."""
    w, h = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    mode = draw(st.sampled_from(sorted(SUPPORTED_MODES)))
    seed = draw(st.integers(0, 3))
    im = image_in_mode(w, h, mode, seed)
    if draw(st.booleans()):  # photo-like content where Pillow converts to the mode, noise otherwise
        try:
            im = make_image(w, h, seed=seed).convert(mode)
        except ValueError:
            pass
    if mode == "P" and draw(st.booleans()):
        im.info["transparency"] = 0
    files = [data for fmt in FILE_FORMATS if (data := file_bytes(im, fmt)) is not None]
    if files_only and not files:  # HSV, La, RGBa: no format writes them, only the Python API takes them
        unpremultiplied = {"La": "LA", "RGBa": "RGBA"}.get(mode)  # Pillow converts La only to LA
        im = (im.convert(unpremultiplied) if unpremultiplied else im).convert("RGBA" if mode in ALPHA_MODES else "RGB")
        files = [file_bytes(im, "PNG")]
    source = draw(st.sampled_from(files if files_only else [im, *files]))
    return source, w, h
