"""Reading a job's outcome, and settling a job nobody is running (cancel while queued, reaper).

A worker commits its own job's outcome through its lease (:meth:`worker.fencing.Lease.commit`).
A job that no execution holds is settled by :func:`settle_in`, inside a
transaction whose WATCH covers the lease and the outcome keys, so the two
paths can never both write.
"""

from __future__ import annotations

from typing import Any

import redis
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.utils import now, utcformat

from worker import protocol
from worker.protocol import JobState, Outcome

RQ_STATUS = {JobState.SUCCEEDED: JobStatus.FINISHED, JobState.FAILED: JobStatus.FAILED,
             JobState.CANCELED: JobStatus.CANCELED}
"""The RQ status that follows each terminal state."""


def read_outcome(connection: redis.Redis, job_id: str) -> Outcome | None:
    raw = connection.get(protocol.outcome_key(job_id))
    return Outcome.from_json(raw) if raw is not None else None


def outcome_ttl(job: Job, state: JobState) -> int:
    """Seconds the outcome (and the job hash) stay readable: the job's result or failure TTL."""
    ttl = job.result_ttl if state is JobState.SUCCEEDED else job.failure_ttl
    return int(ttl) if ttl and ttl > 0 else protocol.DEFAULT_RESULT_TTL


def settle_in(pipe: Any, job: Job, queue: Queue, outcome: Outcome) -> None:
    """Queue the writes that end ``job`` with ``outcome`` on a transaction pipeline (after MULTI).

    The outcome record, the upload's deletion and RQ's status, registry and
    expiry go in together, and the job leaves the queue and the intermediate list.
    """
    ttl = outcome_ttl(job, outcome.state)
    status = RQ_STATUS[outcome.state]
    pipe.set(protocol.outcome_key(job.id), outcome.to_json(), ex=ttl)
    pipe.delete(protocol.upload_key(job.id))
    registry = {JobStatus.FINISHED: queue.finished_job_registry, JobStatus.FAILED: queue.failed_job_registry,
                JobStatus.CANCELED: queue.canceled_job_registry}[status]
    # Some registries save the whole job hash from this object: give it its end first.
    job._status, job.ended_at = status, now()
    registry.add(job, ttl, pipeline=pipe)
    pipe.hset(job.key, mapping={"status": status.value, "ended_at": utcformat(job.ended_at)})
    pipe.lrem(queue.key, 0, job.id)
    pipe.lrem(queue.intermediate_queue_key, 0, job.id)
    pipe.expire(job.key, ttl)
