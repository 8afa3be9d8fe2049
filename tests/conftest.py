"""Shared fixtures: a private Redis per session, flushed before and after each test.

Set ``REDIS_URL`` to use an existing server instead (its database is flushed!).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.support.redis import require_redis_server

# Property tests (hypothesis, schemathesis) are derandomized in the suite, so a
# run is reproducible; METALIC_HYPOTHESIS_PROFILE=explore draws new cases
# (pass --hypothesis-seed to replay one run). Each test sets its own bounded
# max_examples, scaled by METALIC_PROPERTY_SCALE (tests/support/properties.py).
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
_hypothesis_settings.register_profile("explore", derandomize=False, deadline=None, print_blob=True)
_hypothesis_settings.load_profile(os.environ.get("METALIC_HYPOTHESIS_PROFILE", "ci"))

TESTS_DIR = Path(__file__).resolve().parent
FAKE_CODEC_DIR = TESTS_DIR / "e2e"

# Helper modules of the service/worker/client/e2e tests (fake_codec, api_helpers,
# e2e_helpers) are imported by name; pytest's importlib mode does not add test
# directories to sys.path, so they are added here.
# The SDK is its own distribution in client/; use the source tree if not installed.
for _helpers in (TESTS_DIR / "service", TESTS_DIR / "e2e", TESTS_DIR.parent / "client"):
    if str(_helpers) not in sys.path:
        sys.path.insert(0, str(_helpers))


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory) -> str:
    """URL of a Redis for the whole session: ``$REDIS_URL`` or a private redis-server."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    from service.redis_server import EmbeddedRedis

    require_redis_server()
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server_url) -> str:
    """A flushed Redis database, flushed again after the test."""
    import redis

    client = redis.Redis.from_url(redis_server_url)
    client.flushdb()
    yield redis_server_url
    client.flushdb()
    client.close()


@pytest.fixture
def redis_conn(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def fake_codec():
    """The torch-free stand-in codec of tests/e2e/fake_codec.py (same contract as ``codec``)."""
    import fake_codec

    return fake_codec
