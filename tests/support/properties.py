"""How many cases a property test draws: bounded in the suite, scaled up for a documented long run.

``METALIC_PROPERTY_SCALE=N`` multiplies every property test's case count
(docs/BENCHMARKS.md records the long runs and what they found); with
``METALIC_HYPOTHESIS_PROFILE=explore`` the cases are new draws, and the encode
properties also run the presets' own step counts instead of short ones.
"""

from __future__ import annotations

import os


def examples(in_suite: int) -> int:
    """max_examples of a property test: ``in_suite`` times ``METALIC_PROPERTY_SCALE`` (default 1)."""
    return in_suite * max(1, int(os.environ.get("METALIC_PROPERTY_SCALE", "1")))


def exploring() -> bool:
    """True in a long run (``METALIC_HYPOTHESIS_PROFILE=explore``): full preset step counts, new draws."""
    return os.environ.get("METALIC_HYPOTHESIS_PROFILE") == "explore"
