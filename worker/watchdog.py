"""The watchdog thread of a running job: it renews the lease only while the main thread lives.

A heartbeat sent from a side thread proves only that the side thread runs.
This one renews the job's lease (and RQ's worker and execution entries) only
while the main thread keeps returning to the interpreter, and it stops the
whole process when the worker can no longer be trusted with its job:

=====================  ==========================================================  =====
condition              what it does                                                exit
=====================  ==========================================================  =====
main thread stalled    no Python line run for ``stall_timeout`` s (a hang in       70
                       native code): give the job back (retry) or fail it
                       ``worker-stalled``, then exit
lease lost             the lease names another execution (this process was         71
                       paused or declared dead): exit, publishing nothing
cut off from Redis     no renewal got through for a whole lease TTL: the lease     72
                       has expired in Redis and the job is someone else's
past the hard limit    job timeout + lease TTL and the main thread never saw RQ's  73
                       SIGALRM (native code): fail the job ``job-timeout``, exit
=====================  ==========================================================  =====

Exiting is the one stop that always works while the main thread sits in
native code; ``metalic serve`` and docker-compose's restart policy start a new
worker, and the reaper (:mod:`worker.reaper`) hands the job to another one.
A native call that holds the GIL stops this thread too; each tick is therefore
also reported to a watcher process (:mod:`worker.liveness`), which kills the
worker once the ticks stop and the lease has lapsed.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

import redis

from worker.fencing import Lease
from worker.liveness import LivenessReporter

log = logging.getLogger("metalic.worker")

EXIT_STALLED = 70
EXIT_LEASE_LOST = 71
EXIT_CUT_OFF = 72
EXIT_HARD_TIMEOUT = 73


def hard_exit(code: int) -> None:
    """End the process now: no cleanup handlers, no Redis writes, whatever the main thread is doing."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - the process ends either way
            pass
    os._exit(code)


_PENDING_CALL = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
_add_pending_call = ctypes.pythonapi.Py_AddPendingCall
_add_pending_call.argtypes = [_PENDING_CALL, ctypes.c_void_p]
_add_pending_call.restype = ctypes.c_int


class MainThreadPulse:
    """Counts the times the main thread came back to the interpreter when asked.

    :meth:`probe` queues a call with CPython's ``Py_AddPendingCall``, which
    the main thread runs at its next bytecode boundary (the same hook that runs
    Python signal handlers). A main thread that computes, even in long torch
    calls, answers within one call's time; one stuck in a native call that
    never returns never answers. Sampling its frames cannot tell those apart:
    a loop around one C call looks the same as a hang inside it.

    .. note:: One instance per process (:data:`PULSE`): CPython holds the
       callback pointer until it runs, so the object must never be freed.
    """

    def __init__(self):
        self.count = 0
        self._queued = False
        self._callback = _PENDING_CALL(self._ran)

    def _ran(self, _arg) -> int:
        self.count += 1
        self._queued = False
        return 0

    def probe(self) -> None:
        """Ask the main thread for a sign of life (at most one request outstanding)."""
        if not self._queued:
            self._queued = True
            if _add_pending_call(self._callback, None) != 0:  # CPython's small queue is full; ask next time
                self._queued = False


PULSE = MainThreadPulse()


class Watchdog(threading.Thread):
    """Renews one lease while the main thread lives; stops the process when the job is no longer safe.

    Args:
        lease: Lease. The running execution's lease.
        heartbeat: callable(). RQ's own worker/execution heartbeats (skipped when None).
        interval: float. Seconds between renewals.
        stall_timeout: float. Seconds without main-thread progress before it counts as hung.
        hard_timeout: float. Seconds after the start past which the job is failed as timed out.
        give_back: callable(reason) -> None. Requeue or fail the job while the lease is ours (stall).
        fail_timeout: callable() -> None. Commit the job-timeout failure while the lease is ours.
        stop_process: callable(code). Ends the process; :func:`hard_exit` unless a test swaps it.
        pulse: MainThreadPulse. Proof that the main thread, which runs the job, still runs Python.
        liveness: LivenessReporter | None. Told of each tick, for the watcher process that stops
            this worker when a hang holding the GIL keeps this very thread from running.
    """

    def __init__(self, lease: Lease, *, heartbeat: Callable[[], None] | None, interval: float, stall_timeout: float,
                 hard_timeout: float, give_back: Callable[[], None], fail_timeout: Callable[[], None],
                 stop_process: Callable[[int], None] = hard_exit, pulse: MainThreadPulse = PULSE,
                 liveness: LivenessReporter | None = None):
        super().__init__(name="metalic-watchdog", daemon=True)
        self.lease = lease
        self.heartbeat = heartbeat
        self.interval = interval
        self.stall_timeout = stall_timeout
        self.hard_timeout = hard_timeout
        self.give_back = give_back
        self.fail_timeout = fail_timeout
        self.stop_process = stop_process
        self.pulse = pulse
        self.liveness = liveness
        self.stopped = threading.Event()
        self.exit_code: int | None = None

    def stop(self) -> None:
        self.stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join()

    def run(self) -> None:
        started = last_change = last_tick = time.monotonic()
        seen = self.pulse.count
        self.pulse.probe()
        self._tick(started)
        while not self.stopped.wait(self.interval):
            now = time.monotonic()
            self._tick(now)
            if now - last_tick > 2 * self.interval + 1.0:
                # The whole process was frozen (SIGSTOP, a suspended VM): the main thread is not to blame.
                last_change = now
            last_tick = now
            if self.pulse.count != seen:
                seen, last_change = self.pulse.count, now
            self.pulse.probe()
            if now - started > self.hard_timeout:
                log.error("job %s: past the hard time limit (%.0fs) inside native code; failing it and exiting",
                          self.lease.job_id, self.hard_timeout)
                self._finish(self.fail_timeout, EXIT_HARD_TIMEOUT)
                return
            if now - last_change > self.stall_timeout:
                if not self._still_ours():
                    return
                log.error("job %s: the main thread ran no Python for %.0fs (hung in native code); giving the job "
                          "back and exiting", self.lease.job_id, now - last_change)
                self._finish(self.give_back, EXIT_STALLED)
                return
            if not self._renew(now):
                return

    def _tick(self, now: float) -> None:
        if self.liveness is not None:
            self.liveness.busy(self.lease.job_id, self.lease.deadline() - now)

    def _still_ours(self) -> bool:
        """Before acting on a stall: is the lease still this execution's? (Never renews it.)"""
        try:
            held = self.lease.released or self.lease.held()
        except redis.RedisError as exc:
            if time.monotonic() < self.lease.deadline():
                return True
            log.error("job %s: cut off from Redis for a whole lease TTL (%s); exiting", self.lease.job_id, exc)
            self._exit(EXIT_CUT_OFF)
            return False
        if not held:
            log.error("job %s: execution %s lost its lease; exiting", self.lease.job_id, self.lease.execution_id)
            self._exit(EXIT_LEASE_LOST)
        return held

    def _renew(self, now: float) -> bool:
        try:
            held = self.lease.renew()
            if held and self.heartbeat is not None:
                self.heartbeat()
        except redis.RedisError as exc:
            if now >= self.lease.deadline():
                log.error("job %s: no lease renewal got through for %.0fs (%s); the lease has expired, exiting",
                          self.lease.job_id, self.lease.ttl, exc)
                self._exit(EXIT_CUT_OFF)
                return False
            log.warning("job %s: lease renewal failed (%s); retrying", self.lease.job_id, exc)
            return True
        if not held:
            log.error("job %s: execution %s lost its lease (another worker owns the job now); exiting",
                      self.lease.job_id, self.lease.execution_id)
            self._exit(EXIT_LEASE_LOST)
            return False
        return True

    def _finish(self, action: Callable[[], None], code: int) -> None:
        try:
            action()
        except Exception:  # noqa: BLE001 - the job is recovered by the reaper once the lease expires
            log.exception("job %s: could not hand the job back; the reaper will", self.lease.job_id)
        self._exit(code)

    def _exit(self, code: int) -> None:
        self.exit_code = code
        self.stopped.set()
        self.stop_process(code)
