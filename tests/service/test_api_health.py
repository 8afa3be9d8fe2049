"""/healthz, /readyz, /metrics and the OpenAPI docs."""

from __future__ import annotations

from api_helpers import submit
from rq import Queue

from worker import protocol
from worker.main import EncodeWorker


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_needs_a_registered_worker(client, redis_conn):
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["redis"] is True and response.json()["workers"] == 0
    worker = EncodeWorker([Queue(protocol.DEFAULT_QUEUE, connection=redis_conn, serializer="json")],
                          connection=redis_conn, serializer="json")
    worker.register_birth()
    try:
        response = client.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {"status": "ready", "redis": True, "workers": 1, "model_loaded": True,
                                   "detail": None}
    finally:
        worker.register_death()


def test_metrics_exposes_requests_and_queue_depth(client):
    submit(client)
    text = client.get("/metrics").text
    assert 'metalic_http_requests_total{method="POST",route="/encode",status="202"} 1.0' in text
    assert "metalic_queue_depth 1.0" in text
    assert "metalic_jobs_submitted_total 1.0" in text


def test_openapi_and_docs_are_served(client):
    schema = client.get("/openapi.json").json()
    assert {"/encode", "/jobs/{job_id}", "/jobs/{job_id}/bitstream", "/decode", "/healthz", "/readyz",
            "/metrics"} <= set(schema["paths"])
    assert "Problem" in schema["components"]["schemas"]
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert client.get("/docs").status_code == 200


def test_missing_api_keys_refuse_to_start(settings):
    import pytest

    from service.main import create_app

    with pytest.raises(ValueError, match="METALIC_API_KEYS"):
        create_app(settings.model_copy(update={"api_keys": []}))


def test_api_keys_from_environment_are_comma_separated(monkeypatch):
    from service.config import Settings

    monkeypatch.setenv("METALIC_API_KEYS", " one, two ,three,")
    monkeypatch.setenv("REDIS_URL", "redis://example:6380/2")
    settings = Settings()
    assert settings.api_keys == ["one", "two", "three"]
    assert settings.redis_url == "redis://example:6380/2"
