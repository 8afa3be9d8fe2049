"""metalic-client: the Python SDK of the metalic image-compression service.

Only ``httpx`` and ``pydantic``: no torch, no codec. See :class:`Client`.
"""

from metalic_client._client import AsyncClient, Client
from metalic_client._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    GoneError,
    IntegrityError,
    InternalServerError,
    JobCanceledError,
    JobError,
    JobFailedError,
    MetalicClientError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    UnprocessableEntityError,
    UnsupportedMediaTypeError,
    WaitTimeoutError,
)
from metalic_client.types import Job, JobLinks, JobResult, JobStatus, Progress

__version__ = "0.1.0"

__all__ = [
    "APIConnectionError", "APIStatusError", "APITimeoutError", "AsyncClient", "AuthenticationError",
    "BadRequestError", "Client", "ConflictError", "GoneError", "IntegrityError", "InternalServerError", "Job", "JobCanceledError",
    "JobError", "JobFailedError", "JobLinks", "JobResult", "JobStatus", "MetalicClientError", "NotFoundError",
    "PayloadTooLargeError", "Progress", "RateLimitError", "UnprocessableEntityError", "UnsupportedMediaTypeError",
    "WaitTimeoutError", "__version__",
]
