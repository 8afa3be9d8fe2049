"""Keeps ``metalic serve``'s worker processes running: a worker that exits is started again.

A worker exits on purpose when it can no longer be trusted with its job (its
watchdog: hung in native code, cut off from Redis, lease lost) and by accident
(a crash, the kernel's out-of-memory killer). Either way its job is recovered
by the reaper; the supervisor's part is that the service never stays without
the workers it was started with. Restarts back off (1 s doubling to 30 s)
while a worker keeps dying young, so a broken setup does not spin.

On :meth:`stop` the workers get SIGTERM and ``drain_timeout`` seconds to
finish their jobs (a warm shutdown); whatever still runs then is killed, and
its job is taken up again by the next start's reaper.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("metalic.serve")

HEALTHY_AFTER = 60.0
"""Seconds. A worker that lived this long resets its restart backoff."""


@dataclass
class Slot:
    """One worker position: the process in it now and its restart history."""

    index: int
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    backoff: float = 1.0
    next_start: float = 0.0
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)


class WorkerSupervisor:
    """Starts ``count`` worker processes and restarts any that exits until :meth:`stop`.

    Args:
        command: list[str]. The worker command line.
        count: int. Worker processes to keep running.
        env: callable(index) -> dict. The environment of worker ``index`` (e.g. its GPU).
        poll_interval: float. Seconds between two checks.
        drain_timeout: float. Seconds :meth:`stop` waits for running jobs to end.
        log_dir: Path | None. Append each worker's output to ``worker-{index}.log`` there (else inherit).
    """

    def __init__(self, command: Sequence[str], count: int, env: Callable[[int], dict[str, str]],
                 poll_interval: float = 0.5, drain_timeout: float = 30.0, max_backoff: float = 30.0,
                 log_dir: Path | None = None):
        self.command = list(command)
        self.log_dir = log_dir
        self.env = env
        self.poll_interval = poll_interval
        self.drain_timeout = drain_timeout
        self.max_backoff = max_backoff
        self.slots = [Slot(i) for i in range(max(count, 0))]
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> WorkerSupervisor:
        with self._lock:
            for slot in self.slots:
                self._spawn(slot)
        self._thread = threading.Thread(target=self._watch, name="metalic-supervisor", daemon=True)
        self._thread.start()
        return self

    def pids(self) -> list[int | None]:
        return [slot.process.pid if slot.process else None for slot in self.slots]

    def _spawn(self, slot: Slot) -> None:
        out = None
        if self.log_dir is not None:
            out = (self.log_dir / f"worker-{slot.index}.log").open("ab")
        slot.process = subprocess.Popen(self.command, env=self.env(slot.index), stdout=out,
                                        stderr=subprocess.STDOUT if out else None)
        if out is not None:
            out.close()  # the child holds its own copy
        slot.started_at = time.monotonic()
        log.info("worker %d started (pid %d)", slot.index, slot.process.pid)

    def _watch(self) -> None:
        while not self._stopping.wait(self.poll_interval):
            with self._lock:
                if self._stopping.is_set():
                    return
                for slot in self.slots:
                    self._check(slot)

    def _check(self, slot: Slot) -> None:
        now = time.monotonic()
        if slot.process is not None:
            code = slot.process.poll()
            if code is None:
                if now - slot.started_at > HEALTHY_AFTER:
                    slot.backoff = 1.0
                return
            slot.exit_codes.append(code)
            lived = now - slot.started_at
            slot.backoff = 1.0 if lived > HEALTHY_AFTER else min(slot.backoff * 2, self.max_backoff)
            slot.next_start = now + (0.0 if lived > HEALTHY_AFTER else slot.backoff / 2)
            slot.process = None
            log.warning("worker %d exited with code %d after %.0fs; restarting in %.1fs", slot.index, code, lived,
                        slot.next_start - now)
        if now >= slot.next_start:
            slot.restarts += 1
            self._spawn(slot)

    def stop(self) -> None:
        """SIGTERM every worker, wait up to ``drain_timeout`` for their jobs, then SIGKILL the rest."""
        self._stopping.set()
        with self._lock:
            running = [slot.process for slot in self.slots if slot.process is not None and slot.process.poll() is None]
            for process in running:
                process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + self.drain_timeout
            for process in running:
                try:
                    process.wait(timeout=max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    log.warning("worker pid %d still busy after %.0fs; killed (its job will be retried)",
                                process.pid, self.drain_timeout)
                    process.kill()
                    process.wait()
        if self._thread is not None:
            self._thread.join(timeout=self.poll_interval + 5)
