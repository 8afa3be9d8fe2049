"""metalic.supervisor.WorkerSupervisor: workers that exit are restarted; stop drains, then kills."""

from __future__ import annotations

import os
import signal
import sys
import time

from metalic.supervisor import WorkerSupervisor

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
DRAINER = [sys.executable, "-c", (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.5), sys.exit(0)))\n"
    "time.sleep(120)\n")]
STUBBORN = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"]


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def env(index):
    return {**os.environ, "WORKER_INDEX": str(index)}


class TestWorkerSupervisor:
    def test_a_killed_worker_is_started_again(self):
        supervisor = WorkerSupervisor(SLEEPER, 2, env, poll_interval=0.1).start()
        try:
            first = supervisor.pids()
            os.kill(first[0], signal.SIGKILL)
            assert wait_for(lambda: supervisor.pids()[0] not in (None, first[0]))
            assert supervisor.pids()[1] == first[1]  # the other one was left alone
            assert supervisor.slots[0].exit_codes == [-signal.SIGKILL] and supervisor.slots[0].restarts == 1
        finally:
            supervisor.stop()

    def test_a_worker_that_keeps_dying_is_restarted_with_backoff(self):
        supervisor = WorkerSupervisor([sys.executable, "-c", "raise SystemExit(3)"], 1, env, poll_interval=0.05,
                                      max_backoff=0.8).start()
        try:
            assert wait_for(lambda: len(supervisor.slots[0].exit_codes) >= 4, timeout=15)
            assert set(supervisor.slots[0].exit_codes) == {3}
            assert supervisor.slots[0].backoff == 0.8
        finally:
            supervisor.stop()

    def test_stop_lets_running_jobs_finish(self):
        supervisor = WorkerSupervisor(DRAINER, 2, env, poll_interval=0.1, drain_timeout=10).start()
        time.sleep(1.0)  # let the children install their handlers
        processes = [slot.process for slot in supervisor.slots]
        started = time.monotonic()
        supervisor.stop()
        assert [p.returncode for p in processes] == [0, 0]
        assert 0.4 < time.monotonic() - started < 5

    def test_stop_kills_what_does_not_drain_in_time(self):
        supervisor = WorkerSupervisor(STUBBORN, 1, env, poll_interval=0.1, drain_timeout=0.5).start()
        time.sleep(1.0)
        process = supervisor.slots[0].process
        supervisor.stop()
        assert process.returncode == -signal.SIGKILL
        time.sleep(0.3)
        assert supervisor.slots[0].process is process  # nothing was restarted after stop

    def test_each_worker_gets_its_own_environment(self):
        from metalic.serve import worker_env

        make = worker_env({"A": "1"}, ["0", "1"])
        assert [make(i)["CUDA_VISIBLE_DEVICES"] for i in range(3)] == ["0", "1", "0"]
        assert "CUDA_VISIBLE_DEVICES" not in worker_env({"A": "1"}, [])(0)
