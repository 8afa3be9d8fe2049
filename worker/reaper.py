"""The reaper: finds executions whose lease is gone and gives their jobs another run or an end.

An execution is alive exactly while ``metalic:lease:{job}`` holds its id. The
reaper runs every ``reap_interval`` seconds in each worker's side thread *and*
in the API process, so a dead worker's job is found within lease TTL +
interval whether the other workers are idle, busy or gone. One pass:

1. every entry ``{job}:{execution}`` of RQ's StartedJobRegistry whose lease is
   not that execution's is dead. Its job, if no outcome exists and no other
   execution holds it, is requeued while it has retries left, and otherwise
   ends ``worker-lost`` (``canceled`` if a cancel was asked for). A job whose
   outcome exists but whose RQ status lags (the worker died right after its
   commit) gets its RQ status put right.
2. a job id left in the queue's intermediate list by a worker that died
   between taking it and registering it goes back on the queue (no retry
   spent: it never ran).

Every decision is a transaction with WATCH on the lease, the outcome and the
job, so reapers in several processes and a worker that wakes up late cannot
both act on one job.

.. note:: RQ's own StartedJobRegistry and intermediate-queue cleanups are
   switched off in :class:`worker.main.EncodeWorker`: they requeue by timestamp
   and know nothing of leases.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import redis
from rq.executions import Execution
from rq.job import JobStatus
from rq.queue import Queue
from rq.utils import parse_composite_key

from worker import protocol
from worker.jobs import EncodeJob
from worker.outcomes import RQ_STATUS, read_outcome, settle_in
from worker.protocol import FailureType, Outcome

log = logging.getLogger("metalic.reaper")


@dataclass
class ReapReport:
    """What one pass did, per action (job ids)."""

    requeued: list[str]
    ended: list[str]
    repaired: list[str]
    unstuck: list[str]

    def __bool__(self) -> bool:
        return bool(self.requeued or self.ended or self.repaired or self.unstuck)


class Reaper:
    """Recovers the jobs of dead executions on some queues.

    Args:
        connection: redis.Redis. Binary-safe client.
        queues: list[str]. Queue names.
        interval: float. Seconds between passes (:meth:`start`).
        settle_grace: float. Seconds a committed job's own worker gets to finish RQ's bookkeeping.
        stuck_grace: float. Seconds a job id may sit in the intermediate list unregistered.
    """

    def __init__(self, connection: redis.Redis, queues: list[str], interval: float = 2.0,
                 settle_grace: float = 10.0, stuck_grace: float = 10.0):
        self.connection = connection
        self.queues = [Queue(name, connection=connection, serializer=protocol.SERIALIZER, job_class=EncodeJob)
                       for name in queues]
        self.interval = interval
        self.settle_grace = settle_grace
        self.stuck_grace = stuck_grace
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- the loop -------------------------------------------------------------
    def start(self) -> Reaper:
        self._thread = threading.Thread(target=self._loop, name="metalic-reaper", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 1.0) -> None:
        """Ask the loop to end; a pass blocked on Redis is not waited for (the thread is a daemon)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except redis.RedisError as exc:
                log.warning("reaper: Redis unavailable (%s); next pass in %.0fs", exc, self.interval)
            except Exception:  # noqa: BLE001 - the reaper must outlive any one bad job record
                log.exception("reaper: pass failed")

    # ---- one pass ---------------------------------------------------------------
    def run_once(self) -> ReapReport:
        report = ReapReport([], [], [], [])
        for queue in self.queues:
            lock = f"{protocol.KEY_PREFIX}:reaper:{queue.name}"
            # One reaper per queue per interval is enough; correctness does not depend on the lock.
            if not self.connection.set(lock, b"1", nx=True, px=max(int(self.interval * 900), 100)):
                continue
            registered = self._dead_executions(queue, report)
            self._unstick(queue, registered, report)
        return report

    def _dead_executions(self, queue: Queue, report: ReapReport) -> set[str]:
        """Recover every dead execution of ``queue``; returns the ids of all registered jobs."""
        entries = [parse_composite_key(raw.decode()) for raw in
                   self.connection.zrange(queue.started_job_registry.key, 0, -1)]
        if not entries:
            return set()
        with self.connection.pipeline(transaction=False) as pipe:
            for job_id, _ in entries:
                pipe.get(protocol.lease_key(job_id))
            leases = pipe.execute()
        for (job_id, execution_id), lease in zip(entries, leases):
            if lease is None or lease.decode() != execution_id:
                self._recover(queue, job_id, execution_id, report)
        return {job_id for job_id, _ in entries}

    def _recover(self, queue: Queue, job_id: str, execution_id: str, report: ReapReport) -> None:
        lease_key, outcome_key = protocol.lease_key(job_id), protocol.outcome_key(job_id)
        entry = f"{job_id}:{execution_id}"
        with self.connection.pipeline() as pipe:
            try:
                pipe.watch(lease_key, outcome_key, EncodeJob.key_for(job_id))
                lease = pipe.get(lease_key)
                if lease is not None and lease.decode() == execution_id:
                    return  # renewed since the scan
                job = queue.fetch_job(job_id)
                dead = Execution(execution_id, job_id, connection=self.connection)
                if job is None:
                    pipe.multi()
                    pipe.zrem(queue.started_job_registry.key, entry)
                    pipe.execute()
                    return
                outcome = read_outcome(self.connection, job_id)
                if outcome is not None:
                    if time.time() - outcome.ended_at < self.settle_grace:
                        return  # its worker is still writing RQ's bookkeeping
                    pipe.multi()
                    self._follow(pipe, job, queue, outcome)
                    dead.delete(job, pipe)
                    pipe.execute()
                    report.repaired.append(job_id)
                    return
                if lease is not None:  # another execution runs the job: this entry is just stale
                    pipe.multi()
                    dead.delete(job, pipe)
                    pipe.execute()
                    return
                status = job.get_status(refresh=False)
                if status == JobStatus.QUEUED and pipe.lpos(queue.key, job_id) is not None:
                    pipe.multi()
                    dead.delete(job, pipe)
                    pipe.execute()
                    return
                canceled = bool(self.connection.exists(protocol.cancel_key(job_id)))
                pipe.multi()
                dead.delete(job, pipe)
                if canceled:
                    settle_in(pipe, job, queue, Outcome.failed(FailureType.CANCELED.value, "canceled by the client",
                                                               attempts=int(job.meta.get("attempts", 0))))
                    action = report.ended
                elif job.retries_left and job.retries_left > 0:
                    job.meta["lost"] = int(job.meta.get("lost", 0)) + 1
                    job.retry(queue, pipe)
                    pipe.lrem(queue.intermediate_queue_key, 0, job_id)
                    action = report.requeued
                else:
                    settle_in(pipe, job, queue, Outcome.failed(
                        FailureType.WORKER_LOST.value, "the worker running this job stopped and no retries were left",
                        attempts=int(job.meta.get("attempts", 0))))
                    action = report.ended
                pipe.execute()
                action.append(job_id)
                log.warning("reaper: execution %s of job %s is dead (lease %s); job %s", execution_id, job_id,
                            "expired" if lease is None else "taken",
                            "requeued" if action is report.requeued else "ended")
                if action is report.ended:
                    log.warning("job %s: outcome %s committed by the reaper", job_id,
                             "canceled" if canceled else "failed")
            except redis.WatchError:
                return  # the job moved on meanwhile; the next pass looks again

    @staticmethod
    def _follow(pipe, job, queue: Queue, outcome: Outcome) -> None:
        """RQ's status and registries after an outcome whose worker died before writing them."""
        status = RQ_STATUS[outcome.state]
        if job.get_status(refresh=False) != status:
            settle_in(pipe, job, queue, outcome)

    def _unstick(self, queue: Queue, registered: set[str], report: ReapReport) -> None:
        for raw in self.connection.lrange(queue.intermediate_queue_key, 0, -1):
            job_id = raw.decode()
            if job_id in registered:
                continue
            seen_key = f"{protocol.KEY_PREFIX}:stuck:{job_id}"
            first = self.connection.set(seen_key, str(time.time()), nx=True, ex=int(self.stuck_grace * 4) + 60)
            seen = self.connection.get(seen_key)
            if first or seen is None or time.time() - float(seen) < self.stuck_grace:
                continue
            with self.connection.pipeline() as pipe:
                try:
                    pipe.watch(protocol.lease_key(job_id), protocol.outcome_key(job_id), EncodeJob.key_for(job_id))
                    if pipe.exists(protocol.lease_key(job_id)):
                        continue  # registered since the scan
                    done = pipe.exists(protocol.outcome_key(job_id)) or not pipe.exists(EncodeJob.key_for(job_id))
                    pipe.multi()
                    pipe.lrem(queue.intermediate_queue_key, 0, job_id)
                    if not done:
                        queue.push_job_id(job_id, pipeline=pipe, at_front=True)
                    pipe.delete(seen_key)
                    pipe.execute()
                except redis.WatchError:
                    continue
            if not done:
                report.unstuck.append(job_id)
                log.warning("reaper: job %s was taken off the queue by a worker that died before starting it; "
                            "requeued", job_id)
