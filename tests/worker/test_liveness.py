"""worker.liveness.Watcher: when the watcher outside the GIL kills its worker, and when it must not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from worker.liveness import Watcher, is_stopped


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def watcher(stale=6.0) -> tuple[Watcher, Clock]:
    clock = Clock()
    return Watcher(stale, clock), clock


class TestWatcher:
    def test_a_busy_worker_silent_past_its_lease_and_stale_after_is_killed(self):
        dog, clock = watcher()
        dog.feed(b"busy 3.000 job1")
        clock.now += 5.9
        assert dog.frozen_for() is None  # lease lapsed, but a tick may still be on its way
        clock.now += 0.2
        assert dog.frozen_for() == pytest.approx(6.1) and dog.job == "job1"

    def test_silence_within_the_lease_is_not_a_hang(self):
        dog, clock = watcher(stale=2.0)
        dog.feed(b"busy 15.000 job1")
        clock.now += 14.0
        assert dog.frozen_for() is None
        clock.now += 1.5
        assert dog.frozen_for() is not None

    def test_an_idle_worker_is_never_killed(self):
        dog, clock = watcher()
        dog.feed(b"busy 1.000 job1")
        dog.feed(b"idle")
        clock.now += 3600
        assert dog.frozen_for() is None

    def test_each_tick_moves_the_lapse(self):
        dog, clock = watcher()
        for _ in range(10):
            clock.now += 1.0
            dog.feed(b"busy 3.000 job1")
        clock.now += 5.0
        assert dog.frozen_for() is None

    def test_time_spent_stopped_does_not_count(self):
        dog, clock = watcher()
        dog.feed(b"busy 3.000 job1")
        clock.now += 60
        dog.stopped()  # SIGSTOPped all along: whoever stopped it owns the pause
        clock.now += 5.0
        assert dog.frozen_for() is None  # continued: its watchdog gets stale_after to speak or exit

    def test_a_garbled_line_changes_nothing_but_the_last_sign(self):
        dog, clock = watcher()
        dog.feed(b"busy soon")
        clock.now += 100
        assert dog.frozen_for() is None


def test_a_stopped_process_is_seen_as_stopped():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not is_stopped(proc.pid)
        os.kill(proc.pid, signal.SIGSTOP)
        os.waitpid(proc.pid, os.WUNTRACED)
        assert is_stopped(proc.pid)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait()
