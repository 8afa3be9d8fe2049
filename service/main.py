"""The FastAPI application factory: ``uvicorn --factory service.main:create_app``."""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager

import anyio
import redis
from fastapi import FastAPI

from service.codec_port import CodecPort, LibraryCodec
from service.config import Settings
from service.errors import install_error_handlers
from service.jobs import JobService
from service.limits import BodyLimitMiddleware, WorkSlots
from service.metrics import Metrics, MetricsMiddleware
from service.ratelimit import RateLimiter
from service.routes import compare, decode, encode, health, jobs, ui
from service.schemas import Problem
from worker.reaper import Reaper
from service.openapi import complete_schema

log = logging.getLogger("metalic.service")

MULTIPART_OVERHEAD = 64 * 1024
"""Bytes. Room for multipart boundaries and form fields on top of the file itself."""


def _preload(preload, settings: Settings) -> None:
    try:
        preload(settings.preload_model, settings.decode_device)
        log.info("decoder model %s loaded", settings.preload_model)
    except Exception:
        log.exception("could not preload model %s; /readyz stays not ready", settings.preload_model)


def create_app(settings: Settings | None = None, codec: CodecPort | None = None,
               connection: redis.Redis | None = None) -> FastAPI:
    """Build the API.

    Args:
        settings: Settings | None. Defaults to ``Settings()`` from the environment.
        codec: CodecPort | None. Defaults to :class:`LibraryCodec` (the ``codec`` package).
        connection: redis.Redis | None. Defaults to one built from ``settings.redis_url``.
    """
    settings = settings or Settings()
    if not settings.api_keys:
        raise ValueError("no API keys configured: set METALIC_API_KEYS to a comma-separated list of keys")
    connection = connection or redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=5, socket_timeout=30, health_check_interval=30
    )
    metrics = Metrics()
    job_service = JobService(connection, settings)
    metrics.add_queue_collector(job_service)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        _work_slots(app, settings)
        preload = getattr(app.state.codec, "preload", None)
        if preload and settings.preload_model:
            # In a thread: the API answers /healthz at once; /readyz waits for the model.
            threading.Thread(target=_preload, args=(preload, settings), name="metalic-preload", daemon=True).start()
        # The API reaps too: a dead worker's job is found even when every worker is busy or gone.
        reaper = Reaper(connection, [settings.queue], interval=settings.reap_interval).start()
        yield
        reaper.stop()
        connection.close()

    app = FastAPI(
        title="metalic",
        summary="Learned image compression with encoder-side adaptation",
        version="0.1.0",
        lifespan=lifespan,
        # The docs page is served by service.routes.ui from local files, not from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.redis = connection
    app.state.codec = codec or LibraryCodec(settings.decoder)
    app.state.jobs = job_service
    app.state.metrics = metrics
    app.state.rate_limiter = RateLimiter(connection, settings.rate_limit, settings.rate_window)
    app.state.decode_waiting = 0
    _work_slots(app, settings)

    install_error_handlers(app)
    app.include_router(encode.router)
    app.include_router(jobs.router)
    app.include_router(decode.router)
    app.include_router(health.router)
    app.include_router(compare.router)
    ui.install(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(
        BodyLimitMiddleware,
        limits={"/encode": settings.max_upload_bytes + MULTIPART_OVERHEAD,
                "/decode": settings.max_bitstream_bytes + MULTIPART_OVERHEAD,
                "/compare": settings.max_upload_bytes + MULTIPART_OVERHEAD},
    )

    original_openapi = app.openapi

    def openapi():
        if app.openapi_schema is None:
            app.openapi_schema = complete_schema(original_openapi(), settings)
        return app.openapi_schema

    app.openapi = openapi
    return app


def _work_slots(app: FastAPI, settings: Settings) -> None:
    """The thread-pool slots of the CPU work the API does itself (again in the lifespan: a new event loop)."""
    app.state.decode_limiter = anyio.CapacityLimiter(settings.decode_concurrency)
    app.state.probe_slots = WorkSlots("probe-busy", settings.probe_concurrency, settings.probe_queue,
                                      settings.retry_after)
    # /compare runs in the decode slots (it is decode-sized work) with a wait queue of its own
    app.state.compare_slots = WorkSlots("compare-busy", settings.decode_concurrency, settings.decode_queue,
                                        settings.retry_after, limiter=app.state.decode_limiter)
