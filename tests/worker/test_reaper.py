"""worker.reaper.Reaper: the jobs of dead executions are requeued or ended, once, on the private Redis."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from rq.job import JobStatus

from tests.worker.worker_helpers import enqueue, make_queue, make_worker, outcome, run_burst
from worker import jobs, protocol
from worker.fencing import Lease, current_lease
from worker.protocol import JobState, Outcome
from worker.reaper import Reaper, ReapReport


@pytest.fixture
def encoder(fake_codec, monkeypatch):
    monkeypatch.setattr(jobs, "_encoder", fake_codec.Encoder())


@pytest.fixture
def queue(redis_conn):
    return make_queue(redis_conn)


def start_and_die(queue, job):
    """What a worker does up to the job code, and then it is SIGKILLed: no more renewals."""
    worker = make_worker(queue)
    dequeued, _ = queue.dequeue_any([queue], None, connection=queue.connection, serializer=queue.serializer,
                                    job_class=queue.job_class)
    assert dequeued.id == job.id
    execution = worker.prepare_execution(dequeued)
    worker.prepare_job_execution(dequeued, remove_from_intermediate_queue=True)
    return execution


def reaper(queue, **kwargs) -> Reaper:
    kwargs.setdefault("settle_grace", 0.0)
    kwargs.setdefault("stuck_grace", 0.0)
    return Reaper(queue.connection, [queue.name], interval=0.01, **kwargs)


class TestDeadExecutions:
    def test_a_live_lease_is_left_alone(self, queue):
        job = enqueue(queue)
        start_and_die(queue, job)
        assert not reaper(queue).run_once()
        assert job.get_status(refresh=True) == JobStatus.STARTED

    def test_expired_lease_requeues_the_job_within_one_pass(self, queue, encoder):
        job = enqueue(queue, retries=2)
        execution = start_and_die(queue, job)
        time.sleep(3.2)  # lease TTL = interval 1 + grace 2 s, Redis's own clock
        report = reaper(queue).run_once()
        assert report.requeued == [job.id]
        job.refresh()
        assert job.get_status() == JobStatus.QUEUED and job.retries_left == 1
        assert queue.connection.zcard(queue.started_job_registry.key) == 0
        assert not queue.connection.exists(f"rq:execution:{job.id}:{execution.id}")
        run_burst(queue)
        record = outcome(queue, job.id)
        assert record.state is JobState.SUCCEEDED and record.attempts == 1  # the dead attempt never ran the code

    def test_no_retries_left_ends_worker_lost_and_deletes_the_upload(self, queue):
        job = enqueue(queue, retries=0)
        start_and_die(queue, job)
        queue.connection.delete(protocol.lease_key(job.id))  # as if it expired
        assert reaper(queue).run_once().ended == [job.id]
        record = outcome(queue, job.id)
        assert record.state is JobState.FAILED and record.error["type"] == "worker-lost"
        assert queue.connection.get(protocol.upload_key(job.id)) is None
        assert job.get_status(refresh=True) == JobStatus.FAILED
        assert 0 < queue.connection.ttl(job.key) <= 3600

    def test_a_dead_job_that_was_canceled_ends_canceled(self, queue):
        job = enqueue(queue, retries=2)
        start_and_die(queue, job)
        queue.connection.set(protocol.cancel_key(job.id), b"1")
        queue.connection.delete(protocol.lease_key(job.id))
        reaper(queue).run_once()
        assert outcome(queue, job.id).state is JobState.CANCELED
        assert queue.count == 0

    def test_a_committed_job_whose_worker_died_before_rq_bookkeeping_is_repaired(self, queue):
        job = enqueue(queue)
        execution = start_and_die(queue, job)
        committed = Lease(queue.connection, job.id, execution.id, 3).commit(
            Outcome(JobState.SUCCEEDED, execution=execution.id, attempts=1,
                    result={"bytes": 1, "sha256": "00", "metadata": {}}), 3600, bitstream=b"x")
        assert committed
        assert job.get_status(refresh=True) == JobStatus.STARTED
        assert reaper(queue).run_once().repaired == [job.id]
        assert job.get_status(refresh=True) == JobStatus.FINISHED
        assert outcome(queue, job.id).state is JobState.SUCCEEDED  # the outcome itself is never rewritten

    def test_concurrent_reapers_requeue_a_job_once(self, queue, redis_url):
        job = enqueue(queue, retries=5)
        execution = start_and_die(queue, job)
        queue.connection.delete(protocol.lease_key(job.id))
        barrier = threading.Barrier(6)
        reports = []

        def reap():
            # Each on its own connection and past the per-pass lock: the WATCH transactions alone keep it to one.
            connection = redis.Redis.from_url(redis_url)
            r = Reaper(connection, [queue.name], settle_grace=0, stuck_grace=0)
            report = ReapReport([], [], [], [])
            barrier.wait()
            r._recover(r.queues[0], job.id, execution.id, report)
            reports.append(report)
            connection.close()

        threads = [threading.Thread(target=reap) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(len(r.requeued) for r in reports) == 1
        assert queue.connection.lrange(queue.key, 0, -1) == [job.id.encode()]
        job.refresh()
        assert job.get_status() == JobStatus.QUEUED and job.retries_left == 4


class TestStuckInTheIntermediateList:
    def test_a_job_taken_but_never_registered_goes_back_on_the_queue(self, queue, encoder):
        job = enqueue(queue)
        queue.dequeue_any([queue], None, connection=queue.connection, serializer=queue.serializer)
        assert queue.count == 0  # ...and the worker died before registering the execution
        r = reaper(queue)
        assert not r.run_once().unstuck  # first sighting only
        queue.connection.delete(f"{protocol.KEY_PREFIX}:reaper:{queue.name}")
        assert r.run_once().unstuck == [job.id]
        assert queue.job_ids == [job.id]
        job.refresh()
        assert job.retries_left == 2  # it never ran: no retry spent
        run_burst(queue)
        assert outcome(queue, job.id).state is JobState.SUCCEEDED


class TestLeaseTokens:
    def test_a_second_copy_of_a_job_id_on_the_queue_is_skipped(self, queue, encoder):
        job = enqueue(queue)
        queue.push_job_id(job.id)  # the same id twice
        worker = make_worker(queue)
        first, _ = queue.dequeue_any([queue], None, connection=queue.connection, serializer=queue.serializer)
        assert worker.prepare_execution(first) is not None
        second, _ = queue.dequeue_any([queue], None, connection=queue.connection, serializer=queue.serializer)
        assert make_worker(queue).prepare_execution(second) is None
        assert current_lease.get() is None
