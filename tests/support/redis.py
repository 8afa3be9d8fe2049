"""The one rule for tests that need a Redis server."""

import os

import pytest


def require_redis_server() -> None:
    """Skip without a redis-server binary; under CI (``CI=true``) fail instead, so a test cannot vanish."""
    from service.redis_server import EmbeddedRedis

    if EmbeddedRedis.available():
        return
    reason = "needs redis-server on PATH or REDIS_URL (scripts/setup.sh provides one)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)
