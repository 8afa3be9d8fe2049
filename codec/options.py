"""Encode options: presets, stage switches and targets, validated without torch.

The service validates requests with :func:`validate_options` before it queues
anything; the worker and the CLI run the same function, so one set of rules
holds everywhere.
"""

import math
from dataclasses import asdict, dataclass, fields

from .constants import DEFAULT_MODEL, LAMBDA_MAX, LAMBDA_MIN
from .errors import OptionsError

TARGET_BPP_RANGE = (0.01, 8.0)
"""Bits per pixel. Accepted target_bpp."""

TARGET_PSNR_RANGE = (15.0, 60.0)
"""dB. Accepted target_psnr."""

MAX_REFINE_STEPS = 5000
"""Iterations. Upper bound on refine_steps per request."""

MAX_LAMBDA_STEPS = 200
"""Iterations. Upper bound on lambda_steps per request."""

RATE_TOLERANCE = 0.02
"""Relative. Rate control stops when |bpp - target| <= tolerance * target."""

DEFAULT_LAMBDA = 0.0067
"""Dimensionless. λ used when no target is given (about 0.5 bpp on Kodak)."""

PRESETS = {
    "fast": {"refine": False, "adapt_lambda": False, "bias_search": False, "rate_control": True,
             "refine_steps": 0, "lambda_steps": 0},
    "balanced": {"refine": True, "adapt_lambda": True, "bias_search": False, "rate_control": True,
                 "refine_steps": 72, "lambda_steps": 5},
    "max": {"refine": True, "adapt_lambda": True, "bias_search": True, "rate_control": True,
            "refine_steps": 400, "lambda_steps": 20},
}

DEFAULT_PRESET = "balanced"
"""The preset of a request that names none."""

ROUNDINGS = ("sga", "noise", "ste")

_DEFAULTS = PRESETS[DEFAULT_PRESET]


@dataclass(frozen=True)
class EncodeOptions:
    """Normalized options of one encode. Build with :func:`validate_options`."""

    target_bpp: float | None = None
    lmbda: float | None = None
    target_psnr: float | None = None
    preset: str = DEFAULT_PRESET
    refine: bool = _DEFAULTS["refine"]
    adapt_lambda: bool = _DEFAULTS["adapt_lambda"]
    bias_search: bool = _DEFAULTS["bias_search"]
    rate_control: bool = _DEFAULTS["rate_control"]
    refine_steps: int = _DEFAULTS["refine_steps"]
    lambda_steps: int = _DEFAULTS["lambda_steps"]
    rounding: str = "sga"
    model: str = DEFAULT_MODEL

    def to_dict(self) -> dict:
        return asdict(self)


def _number(name: str, value, lo: float, hi: float, kind=float):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionsError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or not lo <= value <= hi:  # first: int() of inf or nan raises
        raise OptionsError(f"{name} must be between {lo} and {hi}, got {value!r}")
    if kind is int and int(value) != value:
        raise OptionsError(f"{name} must be an integer, got {value!r}")
    return kind(value)


def validate_options(options: dict | None) -> EncodeOptions:
    """Checks and completes encode options (preset defaults, then explicit switches).

    Raises:
        OptionsError: unknown keys, wrong types, values out of range, or more than one target.
    """
    options = dict(options or {})
    known = {f.name for f in fields(EncodeOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise OptionsError(f"unknown options: {', '.join(unknown)}")
    options = {k: v for k, v in options.items() if v is not None}
    targets = [k for k in ("target_bpp", "lmbda", "target_psnr") if k in options]
    if len(targets) > 1:
        raise OptionsError(f"give at most one of target_bpp, lmbda, target_psnr (got {', '.join(targets)})")
    preset = options.get("preset", DEFAULT_PRESET)
    if preset not in PRESETS:
        raise OptionsError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    values = {"preset": preset, **PRESETS[preset]}
    if "target_bpp" in options:
        values["target_bpp"] = _number("target_bpp", options["target_bpp"], *TARGET_BPP_RANGE)
    if "lmbda" in options:
        values["lmbda"] = _number("lmbda", options["lmbda"], LAMBDA_MIN, LAMBDA_MAX)
    if "target_psnr" in options:
        values["target_psnr"] = _number("target_psnr", options["target_psnr"], *TARGET_PSNR_RANGE)
    for flag in ("refine", "adapt_lambda", "bias_search", "rate_control"):
        if flag in options:
            if not isinstance(options[flag], bool):
                raise OptionsError(f"{flag} must be true or false, got {options[flag]!r}")
            values[flag] = options[flag]
    if "refine_steps" in options:
        values["refine_steps"] = _number("refine_steps", options["refine_steps"], 0, MAX_REFINE_STEPS, int)
    if "lambda_steps" in options:
        values["lambda_steps"] = _number("lambda_steps", options["lambda_steps"], 0, MAX_LAMBDA_STEPS, int)
    if "rounding" in options:
        if options["rounding"] not in ROUNDINGS:
            raise OptionsError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {options['rounding']!r}")
        values["rounding"] = options["rounding"]
    if "model" in options:
        if not isinstance(options["model"], str) or not options["model"]:
            raise OptionsError("model must be a model name")
        values["model"] = options["model"]
    return EncodeOptions(**values)
