"""Per-stage seconds of a decode, for whoever asks (``metalic bench speed``).

The decoder marks its stages with :func:`stage`; nothing is recorded unless a
caller opened :func:`recording` in the same thread (a context variable, so two
service threads never mix their figures). A stage entered twice adds up.

Typical workflow::

    with recording() as seconds:
        decode(data)
    seconds  # {"parse": ..., "entropy_y": ..., "synthesis": ..., ...}
"""

import contextlib
import contextvars
import time

_SECONDS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("decode_stage_seconds", default=None)


@contextlib.contextmanager
def recording():
    """Collects the seconds of every :func:`stage` run inside the block into the dict it yields."""
    seconds: dict[str, float] = {}
    token = _SECONDS.set(seconds)
    try:
        yield seconds
    finally:
        _SECONDS.reset(token)


@contextlib.contextmanager
def stage(name: str):
    seconds = _SECONDS.get()
    if seconds is None:
        yield
        return
    t = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t
