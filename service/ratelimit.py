"""Per-key request rate limits in Redis: past the limit, 429 with ``Retry-After``, never a slow answer.

A fixed window per API key (``metalic:rate:{key}:{window start}``): one
INCR and, on a window's first request, one EXPIRE, done atomically by a short
script. A window can admit up to twice the limit across its boundary; what it
buys is one round trip per request and no clock but Redis's keys' TTLs.
"""

from __future__ import annotations

import logging
import time

import redis

from service.errors import ProblemError
from worker import protocol

log = logging.getLogger("metalic.service")

_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class RateLimiter:
    """At most ``limit`` requests per ``window`` seconds for each API key.

    Args:
        connection: redis.Redis. The service's client.
        limit: int. Requests per window; 0 turns the limit off.
        window: int. Seconds.
    """

    def __init__(self, connection: redis.Redis, limit: int, window: int):
        self.limit = limit
        self.window = window
        self._hit = connection.register_script(_HIT)

    def check(self, key_id: str) -> None:
        """Count one request of ``key_id``; raise the 429 problem past the limit.

        A Redis error lets the request through: the limit guards capacity, and
        every route that needs Redis answers its own 503 anyway.
        """
        if self.limit <= 0:
            return
        now = time.time()
        start = int(now // self.window * self.window)
        try:
            count = self._hit(keys=[protocol.rate_key(key_id, start)], args=[self.window + 1])
        except redis.RedisError as exc:
            log.warning("rate limit not checked (redis: %s)", exc)
            return
        if count > self.limit:
            retry_after = max(1, int(start + self.window - now + 0.999))
            raise ProblemError(429, "rate-limited",
                               f"more than {self.limit} requests in {self.window} s for this API key",
                               headers={"Retry-After": str(retry_after)})
