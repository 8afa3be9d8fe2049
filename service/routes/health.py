"""``GET /healthz`` (alive), ``GET /readyz`` (Redis and a loaded model), ``GET /metrics``."""

from __future__ import annotations

import redis
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.deps import JobsDep, RedisDep
from service.schemas import HealthPublic, ReadinessPublic

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthPublic, summary="Liveness")
def healthz() -> HealthPublic:
    return HealthPublic(status="ok")


@router.get("/readyz", response_model=ReadinessPublic, responses={503: {"model": ReadinessPublic}},
            summary="Readiness: Redis reachable and a worker with its model loaded")
def readyz(request: Request, connection: RedisDep, jobs: JobsDep) -> JSONResponse:
    """Ready when Redis answers, the API's decode model is loaded and a worker is registered.

    Workers register only after their model is loaded, so a registered worker
    means a loaded encoder.
    """
    try:
        redis_ok = bool(connection.ping())
        workers = jobs.worker_count()
    except redis.RedisError:
        redis_ok, workers = False, 0
    event = getattr(request.app.state.codec, "ready", None)
    model_loaded = event.is_set() if event is not None else True
    ready = redis_ok and workers > 0 and model_loaded
    detail = None
    if not redis_ok:
        detail = "redis unreachable"
    elif not model_loaded:
        detail = "decode model not loaded yet"
    elif workers == 0:
        detail = "no worker with a loaded model"
    body = ReadinessPublic(status="ready" if ready else "not-ready", redis=redis_ok, workers=workers,
                           model_loaded=model_loaded, detail=detail)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}})
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
