"""The retry core and request building shared by :class:`Client` and :class:`AsyncClient`."""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import os
import random
import time
import uuid
from pathlib import Path
from typing import IO, Any, Callable, Union

import httpx

from metalic_client import _constants as c
from metalic_client._exceptions import IntegrityError, JobCanceledError, JobFailedError, status_error
from metalic_client.types import Job, JobStatus

ImageInput = Union[str, os.PathLike, bytes, IO[bytes]]
ProgressCallback = Callable[[Job], None]


def read_input(data: ImageInput, default_name: str) -> tuple[str, bytes]:
    """(filename, bytes) from a path, raw bytes or a binary file object."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return default_name, bytes(data)
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        return path.name, path.read_bytes()
    if hasattr(data, "read"):
        return Path(getattr(data, "name", default_name)).name, data.read()
    raise TypeError(f"expected a path, bytes or a binary file, got {type(data).__name__}")


def encode_form(target_bpp: float | None, lmbda: float | None, target_psnr: float | None, preset: str,
                stages: dict[str, Any]) -> dict[str, str]:
    fields: dict[str, Any] = {"target_bpp": target_bpp, "lmbda": lmbda, "target_psnr": target_psnr,
                              "preset": preset, **stages}
    return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in fields.items() if v is not None}


def retry_after_seconds(response: httpx.Response | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if response is None:
        return None
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def header_sha256(response: httpx.Response) -> str | None:
    """The hex sha256 of a ``Repr-Digest: sha-256=:<base64>:`` header (RFC 9530), or None."""
    for item in response.headers.get("repr-digest", "").split(","):
        name, _, value = item.strip().partition("=")
        if name.strip().lower() == "sha-256" and value.startswith(":") and value.endswith(":"):
            try:
                return base64.b64decode(value[1:-1], validate=True).hex()
            except (binascii.Error, ValueError):
                return None
    return None


def verified_bitstream(job: Job | str, response: httpx.Response) -> bytes:
    """The body, once its sha256 matches the job's result and the response's digest (whichever are known)."""
    data = response.content
    actual = hashlib.sha256(data).hexdigest()
    job_id = job.id if isinstance(job, Job) else job
    expected = [h for h in (header_sha256(response), job.result.sha256 if isinstance(job, Job) and job.result else None)
                if h]
    for sha in expected:
        if sha.lower() != actual:
            raise IntegrityError(job_id, sha.lower(), actual)
    return data


class BaseClient:
    """Settings and the pure parts of the retry logic; no I/O here.

    Args:
        base_url: str | None. Service URL; ``$METALIC_URL`` or http://127.0.0.1:8000 when None.
        api_key: str | None. Bearer token; ``$METALIC_API_KEY`` when None.
        timeout: float | httpx.Timeout. Per-request timeout in seconds.
        max_retries: int. Retries on connection errors, 429 and 5xx (0 disables them).
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None,
                 timeout: float | httpx.Timeout = c.DEFAULT_TIMEOUT, max_retries: int = c.DEFAULT_MAX_RETRIES):
        self.base_url = (base_url or os.environ.get("METALIC_URL") or c.DEFAULT_BASE_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("METALIC_API_KEY")
        self.timeout = timeout
        self.max_retries = max_retries

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": c.USER_AGENT, "Accept": "application/json, application/problem+json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    @staticmethod
    def _new_idempotency_key() -> str:
        return f"metalic-{uuid.uuid4()}"

    @staticmethod
    def _should_retry(response: httpx.Response) -> bool:
        if response.status_code in c.RETRY_STATUSES:
            return True
        # The API answers 409 + Retry-After only for "the same request is still being stored".
        return response.status_code == 409 and "retry-after" in response.headers

    def _retry_delay(self, attempt: int, response: httpx.Response | None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based): Retry-After, else backoff with jitter."""
        retry_after = retry_after_seconds(response)
        if retry_after is not None:
            return min(retry_after, c.MAX_RETRY_DELAY) * (1 + 0.1 * random.random())
        delay = min(c.INITIAL_RETRY_DELAY * 2**attempt, c.MAX_RETRY_DELAY)
        return delay * (1 - 0.25 * random.random())

    @staticmethod
    def _check(response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            raise status_error(response)
        return response

    @staticmethod
    def _job(response: httpx.Response) -> Job:
        return Job.model_validate_json(response.content)

    @staticmethod
    def _finished(job: Job) -> Job:
        if job.status is JobStatus.FAILED:
            raise JobFailedError(job)
        if job.status is JobStatus.CANCELED:
            raise JobCanceledError(job)
        return job

    @staticmethod
    def _changed(previous: Job | None, job: Job) -> bool:
        return previous is None or (previous.status, previous.progress) != (job.status, job.progress)
