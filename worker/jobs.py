"""RQ job functions: JSON in, JSON out (enqueued by dotted path, JSON serializer).

:func:`encode_image` is the one job. It reads the upload from Redis, runs the
codec's :class:`~codec.pipeline.Encoder` (loaded once per worker process by
:func:`load_encoder`), publishes progress in the job's meta, stores the
bitstream back in Redis and returns a small JSON-able dict.

.. note:: Every exception raised *by the job code* sets ``retries_left = 0``:
   a bad image or a timeout fails the same way on every worker. Only a job whose
   worker died (SIGKILL, OOM, lost host) is retried, by RQ's StartedJobRegistry
   cleanup, because the job then never got to raise.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from rq import get_current_job
from rq.job import Job
from rq.timeouts import JobTimeoutException

from codec.constants import DEFAULT_MAX_PIXELS
from worker import protocol

log = logging.getLogger("metalic.worker")

_encoder: Any = None
_encoder_lock = threading.Lock()


class JobCanceled(Exception):
    """Raised from the progress callback when ``DELETE /jobs/{id}`` was called."""

    type = "canceled"


class InputMissingError(Exception):
    """The upload expired or was deleted before a worker picked the job up."""

    type = "input-missing"


def import_object(path: str) -> Any:
    """Import ``package.module:attribute`` (or ``package.module.attribute``)."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def load_encoder(model: str = "metalic-vr", device: str | None = None, factory: str = "codec.pipeline:Encoder",
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> Any:
    """Load the encoder once for this process and keep it for every later job.

    Args:
        model: str. Registry slug of the model to load.
        device: str | None. Torch device; None lets the codec pick CUDA when present.
        factory: str. ``module:attribute`` of the encoder class or factory.
        max_pixels: int. Largest image the encoder takes (the API's limit, ``METALIC_MAX_PIXELS``).

    Returns:
        The encoder object (``.encode(image, options, progress)``).
    """
    global _encoder
    with _encoder_lock:
        if _encoder is None:
            started = time.perf_counter()
            _encoder = import_object(factory)(model=model, device=device, max_pixels=max_pixels)
            log.info("loaded encoder %s (model %s) in %.1fs", factory, model, time.perf_counter() - started)
        return _encoder


def get_encoder() -> Any:
    """The process's encoder, loaded with the environment's settings on first use."""
    if _encoder is None:
        settings = _settings()
        return load_encoder(settings.model, settings.device, settings.encoder_factory, settings.max_pixels)
    return _encoder


class ProgressPublisher:
    """Progress callback: writes throttled progress to the job's meta, checks for cancel.

    Redis errors while publishing are logged and swallowed: progress is advisory
    and a blip of the Redis connection must not fail an hour-long encode.
    """

    def __init__(self, job: Job, min_interval: float = 0.5):
        self.job = job
        self.min_interval = min_interval
        self._last_write = 0.0
        self._last_stage: str | None = None

    def __call__(self, progress: dict) -> None:
        try:
            canceled = bool(self.job.connection.exists(protocol.cancel_key(self.job.id)))
        except redis.RedisError:
            canceled = False
        if canceled:
            raise JobCanceled("canceled by the client")
        now = time.monotonic()
        stage = progress.get("stage")
        last_step = progress.get("steps") is not None and progress.get("step") == progress.get("steps")
        if stage == self._last_stage and not last_step and now - self._last_write < self.min_interval:
            return
        self._last_write, self._last_stage = now, stage
        self.publish(progress)

    def publish(self, progress: dict) -> None:
        self.job.meta["progress"] = {k: progress.get(k) for k in ("stage", "step", "steps", "bpp", "psnr")}
        try:
            self.job.save_meta()
        except redis.RedisError as exc:
            log.warning("job %s: could not publish progress: %s", self.job.id, exc)


def _error_info(exc: BaseException) -> dict:
    if isinstance(exc, JobTimeoutException):
        return {"type": "job-timeout", "detail": "the encode did not finish within the job timeout"}
    slug = getattr(type(exc), "type", None)
    if isinstance(slug, str) and (isinstance(exc, ValueError) or isinstance(exc, (JobCanceled, InputMissingError))):
        return {"type": slug, "detail": str(exc)[:1000]}
    return {"type": "internal-error", "detail": f"{type(exc).__name__}: {str(exc)[:500]}"}


def _with_redis_retry(fn: Callable[[], Any], attempts: int = 8) -> Any:
    """Run a Redis write, retrying with backoff so a Redis restart does not lose a finished encode."""
    delay = 0.25
    for attempt in range(attempts):
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError):
            if attempt == attempts - 1:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def encode_image(upload_key: str, options: dict) -> dict:
    """Encode one uploaded image (the RQ job).

    Args:
        upload_key: str. Redis key of the input bytes (``metalic:upload:{job_id}``).
        options: dict. Options already normalized by ``codec.options.validate_options``.

    Returns:
        dict. ``{"bitstream_key", "bytes", "sha256", "metadata"}``, JSON-able; the
        bitstream itself is in Redis under ``bitstream_key`` for the result TTL.
    """
    job = get_current_job()
    if job is None:
        raise RuntimeError("encode_image must run inside an RQ worker")
    job.meta["attempts"] = int(job.meta.get("attempts", 0)) + 1
    job.meta["worker"] = job.worker_name
    job.meta.pop("error", None)
    publisher = ProgressPublisher(job, _progress_interval())
    publisher.publish({"stage": "loading", "step": 0, "steps": None, "bpp": None, "psnr": None})
    try:
        data = job.connection.get(upload_key)
        if data is None:
            raise InputMissingError("the uploaded image expired before a worker picked the job up")
        result = get_encoder().encode(data, options, progress=publisher)
        bitstream = bytes(result.bitstream)
        job_id = protocol.job_id_from_upload_key(upload_key)
        key = protocol.bitstream_key(job_id)
        ttl = job.result_ttl if job.result_ttl and job.result_ttl > 0 else None
        _with_redis_retry(lambda: job.connection.set(key, bitstream, ex=ttl))
        _with_redis_retry(lambda: job.connection.expire(upload_key, _upload_ttl_after_success()))
    except BaseException as exc:
        if isinstance(exc, Exception):
            # Raised by the job itself: deterministic, so fail now instead of retrying.
            job.retries_left = 0
            job.meta["error"] = _error_info(exc)
            try:
                job.save_meta()
            except redis.RedisError:
                log.warning("job %s: could not record error %s", job.id, job.meta["error"])
        raise
    job.meta["progress"] = {"stage": "done", "step": None, "steps": None,
                            "bpp": result.metadata.get("bpp"), "psnr": result.metadata.get("psnr")}
    _with_redis_retry(job.save_meta)
    return {
        "bitstream_key": key,
        "bytes": len(bitstream),
        "sha256": hashlib.sha256(bitstream).hexdigest(),
        "metadata": result.metadata,
    }


@functools.lru_cache(maxsize=1)
def _settings() -> Any:
    from worker.config import WorkerSettings

    return WorkerSettings()


def _progress_interval() -> float:
    return _settings().progress_interval


def _upload_ttl_after_success() -> int:
    return _settings().upload_ttl_after_success
