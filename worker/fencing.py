"""The lease of one execution on its job, and the compare-and-set commits it guards.

An execution may change a job's fate only while ``metalic:lease:{id}`` holds
its execution id. The lease is taken in the same MULTI that registers the
execution (so no window exists in which a registered execution holds no lease),
renewed by the worker's watchdog, and given up by the commit that writes the
job's one :class:`~worker.protocol.Outcome`. A worker that was paused, cut off
from Redis or declared dead finds, when it wakes up, that the lease names
another execution or nobody: its commit is refused and nothing it computed is
published.

::

    acquire (NX, with the execution)  ─> renew (if still mine) ... ─> commit (if still mine, once)
                                                                  └─> requeue (if still mine)
    reaper:  lease gone and no outcome ─> requeue or settle (WATCH on lease, outcome, job)

.. note:: Lease expiry is Redis's own clock (``PX``), so worker clocks never
   decide who owns a job.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from worker import protocol

log = logging.getLogger("metalic.worker")

_ACQUIRE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
"""KEYS lease, outcome; ARGV execution id, TTL ms. 1 taken, 0 held by another execution, -1 job already ended."""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if ARGV[4] == '1' then redis.call('SET', KEYS[4], ARGV[5], 'EX', ARGV[6]) end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('DEL', KEYS[1], KEYS[3])
return 1
"""
"""KEYS lease, outcome, upload, bitstream; ARGV execution id, outcome JSON, outcome TTL, has-bitstream, bitstream,
bitstream TTL. The outcome, the bitstream and the upload's deletion land together or not at all."""


class LeaseLost(BaseException):
    """This execution no longer owns its job: drop everything, write nothing.

    A BaseException so that no ``except Exception`` in the job code or the
    codec can swallow it and carry on as if the job were still ours.
    """


current_lease: contextvars.ContextVar[Lease | None] = contextvars.ContextVar("metalic_lease", default=None)
"""The lease of the execution the worker's main thread is running (set by :class:`worker.main.EncodeWorker`)."""


class Lease:
    """One execution's claim on one job.

    Args:
        connection: redis.Redis. Binary-safe client.
        job_id: str. The job.
        execution_id: str. RQ's execution id, the token of the compare-and-set.
        ttl: float. Seconds the lease lives without a renewal.
        renew_connection: redis.Redis | None. Client for renewals; give it short timeouts and no
            retries (:func:`fast_client`), so a hung socket cannot outlast the lease unnoticed.
    """

    def __init__(self, connection: redis.Redis, job_id: str, execution_id: str, ttl: float,
                 renew_connection: redis.Redis | None = None):
        self.connection = connection
        self.job_id = job_id
        self.execution_id = execution_id
        self.ttl = ttl
        self.key = protocol.lease_key(job_id)
        self.renewed_at = time.monotonic()
        self.released = False
        """True once a commit or requeue gave the lease up: renewals then have nothing to do."""
        self._lock = threading.Lock()
        self.renew_connection = renew_connection or connection
        self._renew = self.renew_connection.register_script(_RENEW)
        self._commit = connection.register_script(_COMMIT)

    @property
    def ttl_ms(self) -> int:
        return int(self.ttl * 1000)

    def acquire_in(self, pipeline: Any) -> None:
        """Queue the acquisition in ``pipeline`` (its result is :meth:`acquired`'s argument)."""
        pipeline.eval(_ACQUIRE, 2, self.key, protocol.outcome_key(self.job_id), self.execution_id, self.ttl_ms)

    def renew(self) -> bool:
        """Extend the lease if it is still this execution's. Raises redis errors to the caller."""
        with self._lock:
            if self.released:
                return True
            held = bool(self._renew(keys=[self.key], args=[self.execution_id, self.ttl_ms]))
            if held:
                self.renewed_at = time.monotonic()
            return held

    def held(self) -> bool:
        value = self.renew_connection.get(self.key)
        return value is not None and value.decode() == self.execution_id

    def commit(self, outcome: protocol.Outcome, ttl: int, bitstream: bytes | None = None,
               bitstream_ttl: int | None = None) -> bool:
        """Write the job's outcome (and bitstream) if this execution still holds the lease and none exists.

        Returns:
            bool. True if committed; False if the lease was lost or the job already has an outcome.
        """
        keys = [self.key, protocol.outcome_key(self.job_id), protocol.upload_key(self.job_id),
                protocol.bitstream_key(self.job_id)]
        args = [self.execution_id, outcome.to_json(), max(int(ttl), 1), "1" if bitstream is not None else "0",
                bitstream if bitstream is not None else b"", max(int(bitstream_ttl or ttl), 1)]
        with self._lock:
            result = with_redis_retry(lambda: self._commit(keys=keys, args=args), self.deadline())
            self.released = self.released or result == 1
        if result != 1:
            log.warning("job %s: execution %s lost its lease (commit refused: %s)", self.job_id, self.execution_id,
                        "outcome exists" if result == -1 else "lease not held")
        return result == 1

    def deadline(self) -> float:
        """Monotonic time after which the lease has surely expired in Redis (no renewal since)."""
        return self.renewed_at + self.ttl

    def requeue(self, fn: Callable[[Any], None]) -> bool:
        """Run ``fn(pipeline)`` in one transaction with giving up the lease, if the lease is still ours.

        ``fn`` queues RQ's writes (put the job back, drop the execution). WATCH
        on the lease key makes the whole thing a compare-and-set.
        """
        def attempt() -> bool:
            with self.connection.pipeline() as pipe:
                try:
                    pipe.watch(self.key)
                    value = pipe.get(self.key)
                    if value is None or value.decode() != self.execution_id:
                        return False
                    pipe.multi()
                    pipe.delete(self.key)
                    fn(pipe)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    return False

        with self._lock:
            done = with_redis_retry(attempt, self.deadline())
            self.released = self.released or done
        return done


def fast_client(connection: redis.Redis, timeout: float) -> redis.Redis:
    """A client to the same server that gives up after ``timeout`` seconds and never retries by itself."""
    kwargs = dict(connection.connection_pool.connection_kwargs)
    kwargs.update(socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))
    kwargs.pop("retry_on_error", None)
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=connection.connection_pool.connection_class,
                                                            **kwargs))


def with_redis_retry(fn: Callable[[], Any], deadline: float | None = None, first_delay: float = 0.1) -> Any:
    """Run ``fn`` again on connection errors (a Redis restart) until ``deadline`` (monotonic), then raise."""
    delay = first_delay
    while True:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            if deadline is not None and time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
