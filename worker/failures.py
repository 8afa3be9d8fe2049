"""Which errors of a job are worth another attempt, and what the client is told about each.

A *deterministic* error fails the same way on every worker (a refused image,
absurd options, a job past its time limit, a bug): the job fails at once with a
stable ``error.type``. A *transient* one is about this attempt, not the job (a
Redis blip, a CUDA or host out-of-memory): the job goes back on the queue while
it has retries left, and fails with that type only when it has none.

Clients only ever read the type and a fixed sentence for anything internal;
the exception's own text goes to the worker's log with the job id.
"""

from __future__ import annotations

import logging
import sys
from typing import NamedTuple

import redis
from rq.timeouts import JobTimeoutException

from worker.protocol import FailureType

log = logging.getLogger("metalic.worker")


class JobCanceled(Exception):
    """Raised from the progress callback when ``DELETE /jobs/{id}`` was called."""

    type = FailureType.CANCELED.value


class InputMissingError(Exception):
    """The upload expired or was deleted before a worker picked the job up."""

    type = FailureType.INPUT_MISSING.value


class Failure(NamedTuple):
    """What one error means for its job."""

    type: str
    """Stable slug the client reads in ``error.type``."""
    detail: str
    """Text for the client: the codec's own message for its input errors, a fixed sentence otherwise."""
    transient: bool
    """True: another attempt may succeed, so the job is retried while it has retries left."""


_INTERNAL = "the encode failed on the worker; the service log has the details"


def is_out_of_memory(exc: BaseException) -> bool:
    """Host or accelerator memory ran out (torch's OutOfMemoryError, or the allocator's RuntimeError text)."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None) if torch else None
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def classify(exc: BaseException) -> Failure:
    """The :class:`Failure` an exception raised by (or around) the job code stands for."""
    if isinstance(exc, (JobCanceled, InputMissingError)):
        return Failure(exc.type, str(exc), False)
    if isinstance(exc, JobTimeoutException):
        return Failure(FailureType.JOB_TIMEOUT.value, "the encode did not finish within the job timeout", False)
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)):
        return Failure(FailureType.BACKEND_UNAVAILABLE.value, "the job store was unreachable during the encode", True)
    if isinstance(exc, redis.OutOfMemoryError):
        return Failure(FailureType.BACKEND_UNAVAILABLE.value, "the job store was full during the encode", True)
    if is_out_of_memory(exc):
        return Failure(FailureType.OUT_OF_MEMORY.value, "the worker ran out of memory on this image", True)
    slug = getattr(type(exc), "type", None)
    # The codec's errors a caller can cause derive from ValueError and carry a slug; their text is for the caller.
    if isinstance(slug, str) and isinstance(exc, ValueError):
        return Failure(slug, str(exc)[:1000], False)
    return Failure(FailureType.INTERNAL_ERROR.value, _INTERNAL, False)


def free_accelerator_memory() -> None:
    """Give cached CUDA blocks back before the next job (after an out-of-memory)."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort on an already failing device
        log.warning("could not empty the CUDA cache", exc_info=True)
