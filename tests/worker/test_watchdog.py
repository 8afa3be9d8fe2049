"""worker.watchdog.Watchdog: renewals follow the watched thread's life; each unsafe state stops the process."""

from __future__ import annotations

import threading
import time

import redis

from tests.worker.worker_helpers import Exits
from worker import protocol
from worker.fencing import Lease, fast_client
from worker.watchdog import EXIT_CUT_OFF, EXIT_HARD_TIMEOUT, EXIT_LEASE_LOST, EXIT_STALLED, Watchdog

JOB = "a" * 32


def held_lease(connection, ttl=3.0, execution="e1") -> Lease:
    lease = Lease(connection, JOB, execution, ttl)
    with connection.pipeline() as pipe:
        lease.acquire_in(pipe)
        assert pipe.execute() == [1]
    return lease


def python_work(seconds: float, until: threading.Event | None = None) -> None:
    """The main thread computing in Python (it passes bytecode boundaries all the time)."""
    deadline = time.monotonic() + seconds
    x = 0
    while time.monotonic() < deadline and not (until is not None and until.is_set()):
        x = (x * 31 + 7) % 1000003


def watchdog(lease, exits: Exits, calls: list, **kwargs) -> Watchdog:
    kwargs.setdefault("stall_timeout", 60.0)
    kwargs.setdefault("hard_timeout", 60.0)
    return Watchdog(lease, heartbeat=lambda: calls.append("beat"), interval=0.2,
                    give_back=lambda: calls.append("give_back"), fail_timeout=lambda: calls.append("timeout"),
                    stop_process=exits, **kwargs)


class TestWatchdog:
    """The test's own main thread plays the worker's main thread: it computes, or sits in one C call."""

    def test_a_computing_main_thread_keeps_its_lease(self, redis_conn):
        lease, exits, calls = held_lease(redis_conn), Exits(), []
        dog = watchdog(lease, exits, calls, stall_timeout=1.0)
        dog.start()
        python_work(2.5)
        dog.stop()
        assert exits.codes == [] and "give_back" not in calls
        assert calls.count("beat") >= 8
        assert redis_conn.pttl(lease.key) > 2000  # renewed, not left to run out

    def test_a_main_thread_stuck_in_one_native_call_is_not_kept_alive(self, redis_conn):
        lease, exits, calls = held_lease(redis_conn), Exits(), []
        dog = watchdog(lease, exits, calls, stall_timeout=1.0)
        dog.start()
        time.sleep(3.0)  # one C call that does not come back to the interpreter
        assert exits.codes == [EXIT_STALLED]
        assert calls[-1] == "give_back"
        assert not dog.is_alive()
        assert 0 < redis_conn.pttl(lease.key) < 2600  # no renewal since it was declared hung

    def test_a_lease_taken_by_another_execution_stops_the_process(self, redis_conn):
        lease, exits, calls = held_lease(redis_conn), Exits(), []
        dog = watchdog(lease, exits, calls)
        dog.start()
        redis_conn.set(protocol.lease_key(JOB), b"e2")  # the reaper gave the job to another execution
        python_work(5, until=dog.stopped)
        assert exits.codes == [EXIT_LEASE_LOST]

    def test_cut_off_from_redis_longer_than_the_lease_stops_the_process(self, redis_conn):
        held_lease(redis_conn, ttl=1.0)
        cut = fast_client(redis.Redis(host="127.0.0.1", port=1), 0.1)  # nothing answers here
        lease = Lease(cut, JOB, "e1", 1.0)
        exits, calls = Exits(), []
        dog = watchdog(lease, exits, calls)
        started = time.monotonic()
        dog.start()
        python_work(10, until=dog.stopped)
        assert exits.codes == [EXIT_CUT_OFF]
        assert 1.0 <= time.monotonic() - started < 3.0

    def test_past_the_hard_limit_the_job_is_failed_as_timed_out(self, redis_conn):
        lease, exits, calls = held_lease(redis_conn), Exits(), []
        dog = watchdog(lease, exits, calls, hard_timeout=0.5)
        dog.start()
        python_work(5, until=dog.stopped)
        assert exits.codes == [EXIT_HARD_TIMEOUT] and calls[-1] == "timeout"
