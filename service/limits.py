"""Bounded work per request: body sizes before buffering (413) and CPU work slots (503).

Every limit and the status it gives is in the settings table of docs/SERVICE.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PROBLEM_JSON, TYPE_PREFIX, ProblemError


class _TooLarge(Exception):
    pass


async def _send_413(scope: Scope, send: Send, limit: int) -> None:
    body = json.dumps({
        "type": TYPE_PREFIX + "payload-too-large",
        "code": "payload-too-large",
        "title": "Payload too large",
        "status": 413,
        "detail": f"the request body is larger than {limit} bytes",
        "instance": scope.get("path", ""),
    }).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Cap the request body per path: by ``Content-Length`` first, then while streaming.

    Args:
        app: ASGIApp. The wrapped app.
        limits: dict[str, int]. Path -> largest body in bytes.
        default: int. Limit for every other path.
    """

    def __init__(self, app: ASGIApp, limits: dict[str, int], default: int = 64 * 1024):
        self.app = app
        self.limits = limits
        self.default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default)
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _send_413(scope, send, limit)
            return

        total = 0
        exceeded = started = False

        async def limited_receive() -> Message:
            nonlocal total, exceeded
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > limit:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the app's error response is replaced by the 413 below
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await _send_413(scope, send, limit)


class WorkSlots:
    """CPU work off the event loop: ``concurrency`` calls at once, ``queue`` more waiting, then 503.

    A request past the wait queue is refused at once with ``Retry-After``
    instead of piling up threads and memory (one full decode of the largest
    image the limits allow is what each running slot may hold).

    Args:
        code: str. Problem code of the 503 (``probe-busy``, ``compare-busy``).
        concurrency: int. Calls running at once, or ``limiter`` to share another pool's slots.
        queue: int. Calls allowed to wait for a slot.
        retry_after: int. Seconds sent in ``Retry-After``.
        limiter: anyio.CapacityLimiter | None. Running slots shared with other work.
    """

    def __init__(self, code: str, concurrency: int, queue: int, retry_after: int,
                 limiter: anyio.CapacityLimiter | None = None):
        self.code = code
        self.limiter = limiter or anyio.CapacityLimiter(concurrency)
        self.capacity = int(self.limiter.total_tokens) + queue
        self.retry_after = retry_after
        self.waiting = 0
        """Calls running or waiting now."""

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a worker thread once a slot is free; ProblemError 503 when the queue is full."""
        if self.waiting >= self.capacity:
            raise ProblemError(503, self.code, "too many requests of this kind in progress, retry later",
                               headers={"Retry-After": str(self.retry_after)})
        self.waiting += 1
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)
        finally:
            self.waiting -= 1
