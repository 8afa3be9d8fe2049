"""Waiting for a started API: poll ``GET /readyz`` until its answer is what the caller needs."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx


def wait_ready(url: str, timeout: float, ready: Callable[[dict], bool] = lambda body: body.get("status") == "ready",
               alive: Callable[[], None] = lambda: None, logs: Callable[[], str] = lambda: "",
               interval: float = 0.3) -> dict:
    """Returns the first ``/readyz`` body that ``ready`` accepts.

    ``alive`` raises when a process the caller started has died, so a crash
    fails at once with its log instead of at the deadline; ``logs`` says what
    the processes printed when the deadline passes.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive()
        try:
            body = httpx.get(f"{url.rstrip('/')}/readyz", timeout=2).json()
            if ready(body):
                return body
        except (httpx.HTTPError, ValueError):
            pass  # not listening yet, or an answer that is not JSON: ask again
        time.sleep(interval)
    raise TimeoutError(f"{url} not ready in {timeout:g}s:\n{logs()}")


def workers_at_least(n: int) -> Callable[[dict], bool]:
    """A ``ready`` test: at least ``n`` workers registered."""
    return lambda body: body.get("workers", 0) >= n
