"""Real ``metalic worker`` processes (fake codec) under the faults the watchdog and the reaper exist for.

Each test starts its own redis-server and workers with short intervals: lease
TTL = 1 + 2 s, reaper every 0.5 s, a stalled main thread declared hung after 2 s.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis
from rq.job import JobStatus

from service.redis_server import EmbeddedRedis
from metalic.proxy import TcpProxy
from tests.support.redis import require_redis_server
from tests.worker.worker_helpers import enqueue, make_queue, outcome
from worker.protocol import JobState
from worker.watchdog import EXIT_CUT_OFF, EXIT_LEASE_LOST, EXIT_STALLED

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "proc-encode"


class Workers:
    """``metalic worker`` processes on one Redis, each logging to a file."""

    def __init__(self, tmp: Path, url: str):
        self.tmp, self.url = tmp, url
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, url: str | None = None, **env: str) -> subprocess.Popen:
        from e2e_helpers import metalic_executable

        full = {**os.environ, "REDIS_URL": url or self.url, "METALIC_QUEUE": QUEUE,
                "METALIC_ENCODER_FACTORY": "fake_codec:Encoder", "METALIC_JOB_MONITORING_INTERVAL": "1",
                "METALIC_HEARTBEAT_GRACE": "2", "METALIC_REAP_INTERVAL": "0.5", "METALIC_STALL_TIMEOUT": "2",
                "METALIC_PROGRESS_INTERVAL": "0.05", "FAKE_STEP_SECONDS": "0.2",
                "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests" / "e2e")]), **env}
        log = (self.tmp / f"{name}.log").open("ab")
        proc = subprocess.Popen([metalic_executable(), "worker", "--name", name], cwd=ROOT, env=full, stdout=log,
                                stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                proc.kill()
            proc.wait()


@pytest.fixture
def server(tmp_path):
    require_redis_server()
    with EmbeddedRedis(tmp_path / "redis", password="pw") as server:
        yield server


@pytest.fixture
def workers(tmp_path, server):
    group = Workers(tmp_path, server.url)
    yield group
    group.stop()


@pytest.fixture
def queue(server):
    connection = redis.Redis.from_url(server.url)
    yield make_queue(connection, QUEUE)
    connection.close()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def children(pid: int) -> list[int]:
    """Child processes of ``pid`` (Linux /proc)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def running_step(job, step: int = 1):
    job.refresh()
    progress = job.meta.get("progress") or {}
    return job.get_status(refresh=False) == JobStatus.STARTED and (progress.get("step") or 0) >= step


def assert_one_published_bitstream(queue, job, execution_of_winner=None):
    record = outcome(queue, job.id)
    assert record is not None and record.state is JobState.SUCCEEDED
    data = queue.connection.get(f"metalic:bitstream:{job.id}")
    assert hashlib.sha256(data).hexdigest() == record.result["sha256"]
    if execution_of_winner is not None:
        assert record.execution == execution_of_winner
    return record


class TestFaults:
    def test_a_worker_hung_in_native_code_gives_its_job_back_and_exits(self, workers, queue):
        job = enqueue(queue, {"preset": "fast", "refine_steps": 6}, retries=2)
        hung = workers.start("hung", FAKE_HANG_AT_STEP="2")
        started = time.monotonic()
        assert wait_for(lambda: hung.poll() is not None, 15, "the hung worker to exit") and \
            hung.returncode == EXIT_STALLED
        assert time.monotonic() - started < 12
        job.refresh()
        assert job.get_status() == JobStatus.QUEUED and job.retries_left == 1  # given back, not left to expire
        workers.start("healthy")
        wait_for(lambda: outcome(queue, job.id), 20, "the job to end on the healthy worker")
        record = assert_one_published_bitstream(queue, job)
        assert record.attempts == 2
        assert "hung in native code" in workers.log("hung")

    def test_a_worker_hung_holding_the_gil_is_killed_from_outside_and_its_job_retried(self, workers, queue):
        # No thread of the hung worker runs (watchdog, reaper, signal handlers): only its liveness
        # watcher, a process of its own, can stop it.
        job = enqueue(queue, {"preset": "fast", "refine_steps": 6}, retries=2)
        frozen = workers.start("frozen", FAKE_HANG_AT_STEP="2", FAKE_HANG_HOLDS_GIL="1")
        wait_for(lambda: running_step(job), 15, "the job to run")
        watcher = wait_for(lambda: children(frozen.pid), 5, "the worker's liveness watcher")
        hung_at = time.monotonic()
        frozen_execution = queue.connection.get(f"metalic:lease:{job.id}")
        wait_for(lambda: frozen.poll() is not None, 20, "the frozen worker to be killed")
        assert frozen.returncode == -signal.SIGKILL
        # the lease (1 + 2 s) has lapsed and no tick came for stale_after(1, 1) = 6 s
        assert time.monotonic() - hung_at < 6 + 2
        assert "holding the GIL" in workers.log("frozen")
        wait_for(lambda: not pid_alive(watcher[0]), 5, "the watcher to end with its worker")
        assert outcome(queue, job.id) is None  # nothing committed by the frozen run
        workers.start("healthy")
        wait_for(lambda: outcome(queue, job.id), 20, "the job to end on the healthy worker")
        record = assert_one_published_bitstream(queue, job)
        assert frozen_execution and record.attempts == 2 and record.execution != frozen_execution.decode()
        job.refresh()
        assert job.get_status() == JobStatus.FINISHED and job.retries_left == 1 and job.meta.get("lost") == 1

    def test_a_paused_worker_that_wakes_up_publishes_nothing(self, workers, queue):
        job = enqueue(queue, {"preset": "fast", "refine_steps": 20}, retries=2)
        paused = workers.start("paused")
        wait_for(lambda: running_step(job), 15, "the job to run")
        paused.send_signal(signal.SIGSTOP)
        workers.start("other")
        wait_for(lambda: outcome(queue, job.id), 30, "the other worker to finish the job")
        winner = outcome(queue, job.id).execution
        paused.send_signal(signal.SIGCONT)
        wait_for(lambda: paused.poll() is not None or "dropped its work" in workers.log("paused"), 10,
                 "the paused worker to notice it lost the job")
        time.sleep(1.0)
        assert paused.poll() in (None, EXIT_LEASE_LOST)
        assert_one_published_bitstream(queue, job, winner)
        assert job.get_status(refresh=True) == JobStatus.FINISHED

    def test_a_worker_cut_off_from_redis_stops_and_its_job_runs_elsewhere(self, workers, queue, server):
        proxy = TcpProxy(server.host, server.port)
        try:
            job = enqueue(queue, {"preset": "fast", "refine_steps": 30}, retries=2)
            cut = workers.start("cut", url=proxy.url("pw"))
            wait_for(lambda: running_step(job), 15, "the job to run")
            proxy.cut()
            cut_at = time.monotonic()
            wait_for(lambda: cut.poll() is not None, 15, "the cut-off worker to stop")
            assert cut.returncode == EXIT_CUT_OFF
            assert time.monotonic() - cut_at < 8  # lease TTL 3 s plus at most a few renewal timeouts
            workers.start("direct")
            wait_for(lambda: outcome(queue, job.id), 30, "the job to end on the other worker")
            proxy.restore()
            assert_one_published_bitstream(queue, job)
        finally:
            proxy.close()

    def test_sigterm_drains_the_running_job_and_takes_no_other(self, workers, queue):
        first = enqueue(queue, {"preset": "fast", "refine_steps": 10})
        second = enqueue(queue, {"preset": "fast", "refine_steps": 2})
        worker = workers.start("draining")
        wait_for(lambda: running_step(first), 15, "the first job to run")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
        assert outcome(queue, first.id).state is JobState.SUCCEEDED
        assert outcome(queue, second.id) is None and queue.job_ids == [second.id]

    def test_a_second_signal_stops_at_once_and_puts_the_job_back_first(self, workers, queue):
        job = enqueue(queue, {"preset": "fast", "refine_steps": 40}, retries=1)
        later = enqueue(queue)
        worker = workers.start("stopped")
        wait_for(lambda: running_step(job), 15, "the job to run")
        worker.send_signal(signal.SIGTERM)
        time.sleep(1.2)  # RQ ignores a repeat within a second
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=20)
        job.refresh()
        assert queue.job_ids == [job.id, later.id]
        assert job.retries_left == 1 and outcome(queue, job.id) is None

    def test_a_killed_workers_job_is_requeued_within_seconds_while_the_others_are_busy(self, workers, queue):
        victim_job = enqueue(queue, {"preset": "fast", "refine_steps": 60}, retries=2)
        busy_job = enqueue(queue, {"preset": "fast", "refine_steps": 60}, retries=2)
        a, b = workers.start("a"), workers.start("b")
        wait_for(lambda: running_step(victim_job) and running_step(busy_job), 20, "both jobs to run")
        victim = a if victim_job.worker_name == "a" else b
        victim.kill()
        killed_at = time.monotonic()
        wait_for(lambda: victim_job.get_status(refresh=True) == JobStatus.QUEUED, 10, "the dead worker's job")
        found_after = time.monotonic() - killed_at
        assert found_after < 3 + 0.5 + 2  # lease TTL + reaper interval + slack
        assert busy_job.get_status(refresh=True) == JobStatus.STARTED  # found by a busy worker's reaper thread
        victim_job.refresh()
        assert victim_job.retries_left == 1
