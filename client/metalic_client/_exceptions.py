"""The SDK's exception hierarchy: catch :class:`MetalicClientError` for all of them.

::

    MetalicClientError
    ├── APIConnectionError          the request never got an HTTP answer
    │   └── APITimeoutError
    ├── APIStatusError              a 4xx/5xx answer; .status, .code, .problem
    │   ├── BadRequestError (400)  AuthenticationError (401)  NotFoundError (404)
    │   ├── ConflictError (409)    GoneError (410)            PayloadTooLargeError (413)
    │   ├── UnsupportedMediaTypeError (415)  UnprocessableEntityError (422)
    │   ├── RateLimitError (429)   InternalServerError (5xx)
    ├── JobError                    the job ended without success; .job
    │   ├── JobFailedError
    │   └── JobCanceledError
    ├── WaitTimeoutError            the job was not done within the wait timeout
    └── IntegrityError              downloaded bytes whose sha256 is not the one the job reported
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from metalic_client.types import Job


class MetalicClientError(Exception):
    """Base of every error the SDK raises."""


class APIConnectionError(MetalicClientError):
    def __init__(self, message: str = "connection error", *, request: httpx.Request | None = None):
        super().__init__(message)
        self.request = request


class APITimeoutError(APIConnectionError):
    def __init__(self, request: httpx.Request | None = None):
        super().__init__("request timed out", request=request)


class APIStatusError(MetalicClientError):
    """An error answer. ``problem`` is the parsed problem+json body (empty if none)."""

    def __init__(self, response: httpx.Response, problem: dict[str, Any]):
        self.response = response
        self.status = response.status_code
        self.problem = problem
        self.code: str = problem.get("code") or "http-error"
        self.detail: str = problem.get("detail") or response.reason_phrase
        super().__init__(f"{self.status} {self.code}: {self.detail}")


class BadRequestError(APIStatusError):
    pass


class AuthenticationError(APIStatusError):
    pass


class NotFoundError(APIStatusError):
    pass


class ConflictError(APIStatusError):
    pass


class GoneError(APIStatusError):
    pass


class PayloadTooLargeError(APIStatusError):
    pass


class UnsupportedMediaTypeError(APIStatusError):
    pass


class UnprocessableEntityError(APIStatusError):
    pass


class RateLimitError(APIStatusError):
    pass


class InternalServerError(APIStatusError):
    pass


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError, 401: AuthenticationError, 404: NotFoundError, 409: ConflictError, 410: GoneError,
    413: PayloadTooLargeError, 415: UnsupportedMediaTypeError, 422: UnprocessableEntityError, 429: RateLimitError,
}


def status_error(response: httpx.Response) -> APIStatusError:
    """The typed exception for an error response."""
    try:
        problem = response.json()
        if not isinstance(problem, dict):
            problem = {}
    except ValueError:
        problem = {}
    cls = _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = InternalServerError if response.status_code >= 500 else APIStatusError
    return cls(response, problem)


class JobError(MetalicClientError):
    def __init__(self, job: Job):
        self.job = job
        error = job.error
        reason = f"{error.type}: {error.detail}" if error else job.status.value
        super().__init__(f"job {job.id} {job.status.value} ({reason})")


class JobFailedError(JobError):
    pass


class JobCanceledError(JobError):
    pass


class WaitTimeoutError(MetalicClientError):
    def __init__(self, job: Job, timeout: float):
        self.job = job
        super().__init__(f"job {job.id} still {job.status.value} after {timeout:.0f}s")


class IntegrityError(MetalicClientError):
    """The bitstream's sha256 differs from the job's ``result.sha256`` or the ``Repr-Digest`` header.

    Nothing is written to disk when this is raised.
    """

    def __init__(self, job_id: str, expected: str, actual: str):
        self.job_id = job_id
        self.expected = expected
        self.actual = actual
        super().__init__(f"bitstream of job {job_id}: sha256 {actual}, expected {expected}")
