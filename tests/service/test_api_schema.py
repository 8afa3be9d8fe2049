"""Schemathesis against the OpenAPI schema: no generated request gets a 5xx.

Every 4xx must also be problem+json. Runs in-process (ASGI) on the private
Redis with the fake codec; ``METALIC_FUZZ_EXAMPLES`` sets the examples per
operation (default 30).
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from api_helpers import auth
from hypothesis import HealthCheck, settings

PROBLEM = "application/problem+json"


@pytest.fixture
def api_schema(app, redis_conn):
    # A registered worker, so that /readyz is legitimately 200 rather than 503.
    from rq import Queue

    from worker import protocol
    from worker.main import EncodeWorker

    worker = EncodeWorker([Queue(protocol.DEFAULT_QUEUE, connection=redis_conn, serializer="json")],
                          connection=redis_conn, serializer="json")
    worker.register_birth()
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
    # Valid and invalid inputs both: invalid ones must get a 4xx, never a 5xx.
    loaded.config.generation.update(modes=list(schemathesis.GenerationMode))
    yield loaded
    worker.register_death()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=int(os.environ.get("METALIC_FUZZ_EXAMPLES", "30")), deadline=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    # With a valid key, so the fuzzing reaches the handlers instead of stopping at 401.
    response = case.call(headers=auth())
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:500])
    if response.status_code >= 400:
        content_type = response.headers.get("content-type", [""])
        content_type = content_type[0] if isinstance(content_type, list) else content_type
        assert content_type.startswith(PROBLEM), (case.method, case.path, response.status_code, content_type)
