"""Fixtures for the API tests: an app on the private Redis with the fake codec."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from api_helpers import KEY_A, KEY_B

from service.config import Settings
from service.main import create_app

@pytest.fixture
def settings(redis_url) -> Settings:
    return Settings(redis_url=redis_url, api_keys=[KEY_A, KEY_B], max_upload_bytes=256 * 1024,
                    max_pixels=512 * 512, max_bitstream_bytes=256 * 1024, max_jobs_in_flight=3, retry_after=7)


@pytest.fixture
def app(settings, fake_codec):
    return create_app(settings, codec=fake_codec.FakeCodec())


@pytest.fixture
def client(app):
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
