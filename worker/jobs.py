"""The one RQ job function, :func:`encode_image`, and the job class that runs nothing else.

:func:`encode_image` reads the upload from Redis, runs the codec's
:class:`~codec.pipeline.Encoder` (loaded once per worker process by
:func:`load_encoder`), publishes progress in the job's meta and commits the
bitstream with the job's outcome through its execution's lease
(:mod:`worker.fencing`): the bitstream is published once, or not at all.

.. note:: Errors are not handled here. :class:`worker.main.EncodeWorker` sorts
   them into deterministic failures and transient ones that are retried
   (:mod:`worker.failures`), and it alone writes those outcomes.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import logging
import threading
import time
from typing import Any

import redis
from rq import get_current_job
from rq.job import Job

from codec.constants import DEFAULT_MAX_PIXELS
from worker import protocol
from worker.failures import InputMissingError, JobCanceled
from worker.fencing import Lease, LeaseLost, current_lease, with_redis_retry

log = logging.getLogger("metalic.worker")

_encoder: Any = None
_encoder_lock = threading.Lock()

_FENCED_META = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'meta', ARGV[2])
return 1
"""
"""Write the job's meta only while the lease is this execution's, so a stale run never overwrites a live one."""


class ForbiddenJobError(Exception):
    """A job in Redis names a function, instance or callback other than :data:`protocol.JOB_FUNCTION`."""

    type = protocol.FailureType.FORBIDDEN_JOB.value


class EncodeJob(Job):
    """RQ's :class:`~rq.job.Job`, restricted to :func:`encode_image`.

    RQ imports whatever dotted path a job hash names (its function and its
    success, failure and stopped callbacks) and posts to whatever webhooks it
    lists, so anyone who can write to Redis could run code on, or send
    requests from, the workers. Workers and the reaper load jobs with this class:
    it resolves only the one job function, imports no callback and sends no webhook.
    """

    @property
    def func(self):
        if not is_allowed(self):
            raise ForbiddenJobError(f"job {self.id} names {self.func_name!r}; workers run only {protocol.JOB_FUNCTION}")
        return encode_image

    @property
    def success_callback(self):
        return None

    @property
    def failure_callback(self):
        return None

    @property
    def stopped_callback(self):
        return None

    def send_webhooks(self, status, *, exc_string=None) -> None:
        return None


def is_allowed(job: Job) -> bool:
    """True if the job names the encode function and nothing else that RQ would import or call."""
    return (job.func_name == protocol.JOB_FUNCTION and job.instance is None
            and not getattr(job, "_success_callback_name", None) and not getattr(job, "_failure_callback_name", None)
            and not getattr(job, "_stopped_callback_name", None) and not getattr(job, "webhooks", None))


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
    """Progress callback: writes throttled progress to the job's meta, checks for cancel and for the lease.

    A Redis error while publishing is logged and swallowed: progress is
    advisory and a blip must not fail an hour-long encode. A refused write
    (the lease is another execution's) raises :class:`LeaseLost` at once, so a
    worker that was paused or cut off stops computing a result nobody will take.
    """

    def __init__(self, job: Job, lease: Lease, min_interval: float = 0.5):
        self.job = job
        self.lease = lease
        self.min_interval = min_interval
        self._last_write = 0.0
        self._last_stage: str | None = None
        self._write = job.connection.register_script(_FENCED_META)

    def __call__(self, progress: dict) -> None:
        self.check_cancel()
        now = time.monotonic()
        stage = progress.get("stage")
        last_step = progress.get("steps") is not None and progress.get("step") == progress.get("steps")
        if stage == self._last_stage and not last_step and now - self._last_write < self.min_interval:
            return
        self._last_write, self._last_stage = now, stage
        self.publish(progress)

    def check_cancel(self) -> None:
        try:
            canceled = bool(self.job.connection.exists(protocol.cancel_key(self.job.id)))
        except redis.RedisError:
            canceled = False
        if canceled:
            raise JobCanceled("canceled by the client")

    def publish(self, progress: dict) -> None:
        self.job.meta["progress"] = {k: progress.get(k) for k in ("stage", "step", "steps", "bpp", "psnr")}
        self.save_meta()

    def save_meta(self) -> None:
        meta = self.job.serializer.dumps(self.job.meta)
        try:
            written = self._write(keys=[self.lease.key, self.job.key], args=[self.lease.execution_id, meta])
        except redis.RedisError as exc:
            log.warning("job %s: could not publish progress: %s", self.job.id, exc)
            return
        if not written:
            raise LeaseLost(f"job {self.job.id}: execution {self.lease.execution_id} no longer holds the lease")


def encode_image(upload_key: str, options: dict) -> dict:
    """Encode one uploaded image (the RQ job) and commit its bitstream.

    Args:
        upload_key: str. Redis key of the input bytes (``metalic:upload:{job_id}``).
        options: dict. Options already normalized by ``codec.options.validate_options``.

    Returns:
        dict. ``{"bitstream_key", "bytes", "sha256", "metadata"}``, JSON-able; the
        bitstream itself is in Redis under ``bitstream_key`` for the result TTL.

    Raises:
        LeaseLost: this execution no longer owns the job; nothing was published.
    """
    job = get_current_job()
    lease = current_lease.get()
    if job is None or lease is None:
        raise RuntimeError("encode_image runs only inside `metalic worker` (it needs the execution's lease)")
    job_id = protocol.job_id_from_upload_key(upload_key)
    job.meta["attempts"] = int(job.meta.get("attempts", 0)) + 1
    job.meta["worker"] = job.worker_name
    publisher = ProgressPublisher(job, lease, _progress_interval())
    publisher.publish({"stage": "loading", "step": 0, "steps": None, "bpp": None, "psnr": None})
    publisher.check_cancel()
    data = with_redis_retry(lambda: job.connection.get(upload_key), lease.deadline())
    if data is None:
        raise InputMissingError("the uploaded image expired before a worker picked the job up")
    result = get_encoder().encode(data, options, progress=publisher)
    bitstream = bytes(result.bitstream)
    summary = {"bytes": len(bitstream), "sha256": hashlib.sha256(bitstream).hexdigest(),
               "metadata": result.metadata}
    outcome = protocol.Outcome(protocol.JobState.SUCCEEDED, execution=lease.execution_id,
                               attempts=job.meta["attempts"], result=summary)
    ttl = job.result_ttl if job.result_ttl and job.result_ttl > 0 else protocol.DEFAULT_RESULT_TTL
    if not lease.commit(outcome, ttl, bitstream=bitstream):
        raise LeaseLost(f"job {job.id}: the bitstream of execution {lease.execution_id} was not published")
    log.info("job %s: outcome %s committed by execution %s", job.id, outcome.state.value, lease.execution_id)
    job.meta["progress"] = {"stage": "done", "step": None, "steps": None,
                            "bpp": result.metadata.get("bpp"), "psnr": result.metadata.get("psnr")}
    return {"bitstream_key": protocol.bitstream_key(job_id), **summary}


@functools.lru_cache(maxsize=1)
def _settings() -> Any:
    from worker.config import WorkerSettings

    return WorkerSettings()


def _progress_interval() -> float:
    return _settings().progress_interval
