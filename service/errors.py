"""Errors as ``application/problem+json`` (RFC 9457), one stable type per cause.

Every response that is not a success goes through :func:`problem_response`,
including FastAPI's own 404/405/422, so clients parse one shape::

    {"type": "urn:metalic:problem:invalid-image", "code": "invalid-image",
     "title": "Invalid image", "status": 422, "detail": "...", "instance": "/encode"}
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from codec.errors import (
    BitstreamError,
    ImageError,
    ImageTooLargeError,
    MetalicError,
    ModelError,
    OptionsError,
)

log = logging.getLogger("metalic.service")

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:metalic:problem:"


class ProblemError(Exception):
    """An error the API answers with a problem+json body.

    Args:
        status: int. HTTP status code.
        code: str. Stable slug of the cause (``type`` is ``urn:metalic:problem:<code>``).
        detail: str. Human-readable explanation of this occurrence.
        headers: dict | None. Extra response headers (``Retry-After``, ``WWW-Authenticate``).
        extra: Any. Extension members added to the body.
    """

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None,
                 title: str | None = None, **extra: Any):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.title = title or _title(code)
        self.extra = extra


def _title(code: str) -> str:
    return code.replace("-", " ").capitalize()


def _code_for_status(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "-").replace("'", "")
    except ValueError:
        return "http-error"


def problem_response(request: Request | None, status: int, code: str, detail: str, *,
                     title: str | None = None, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = {
        "type": TYPE_PREFIX + code,
        "code": code,
        "title": title or _title(code),
        "status": status,
        "detail": detail,
    }
    if request is not None:
        body["instance"] = request.url.path
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


CODEC_ERRORS: list[tuple[type[MetalicError], int]] = [
    (ImageTooLargeError, 413),
    (ImageError, 422),
    (BitstreamError, 422),
    (OptionsError, 422),
    (ModelError, 422),
]
"""Codec exception class -> HTTP status; first match wins (subclasses first)."""


def codec_status(exc: MetalicError) -> int:
    for cls, status in CODEC_ERRORS:
        if isinstance(exc, cls):
            return status
    return 422


def _retry_after(request: Request) -> str:
    settings = getattr(request.app.state, "settings", None)
    return str(settings.retry_after if settings is not None else 5)


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this request's path, as the router itself matches it.

    Starlette answers a 405 from the first route whose path matched, so its
    ``Allow`` named that route's methods only (``GET`` on ``/jobs/{id}``,
    without ``DELETE``); RFC 9110 asks for all of them.
    """
    routes = request.app.router.routes
    return sorted(method for method in HTTP_METHODS
                  if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes))


def install_error_handlers(app: FastAPI) -> None:
    """Replace FastAPI's default handlers so that every error is problem+json."""

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError):
        return problem_response(request, exc.status, exc.code, exc.detail, title=exc.title,
                                headers=exc.headers, **exc.extra)

    @app.exception_handler(MetalicError)
    async def _codec(request: Request, exc: MetalicError):
        return problem_response(request, codec_status(exc), exc.type, str(exc) or exc.type)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = _code_for_status(exc.status_code)
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return problem_response(request, exc.status_code, code, detail, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = [
            {"loc": [str(part) for part in err.get("loc", ())], "msg": str(err.get("msg", "")),
             "type": str(err.get("type", ""))}
            for err in exc.errors()
        ]
        return problem_response(request, 422, "validation-error", "the request is not valid", errors=errors)

    @app.exception_handler(redis.ConnectionError)
    @app.exception_handler(redis.TimeoutError)
    async def _redis_down(request: Request, exc: redis.RedisError):
        log.warning("redis unavailable: %s", exc)
        return problem_response(request, 503, "backend-unavailable", "the job store is unavailable, retry later",
                                headers={"Retry-After": _retry_after(request)})

    @app.exception_handler(redis.OutOfMemoryError)
    async def _redis_full(request: Request, exc: redis.RedisError):
        # maxmemory with noeviction: Redis refuses new writes rather than drop queued jobs.
        log.error("redis is full (maxmemory reached): %s", exc)
        return problem_response(request, 503, "backend-full", "the job store is full, retry later",
                                headers={"Retry-After": _retry_after(request)})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(request, 500, "internal-error", "an unexpected error occurred")
