"""The contract between the API and the workers: Redis key layout and job states.

Both sides import this module; it imports neither torch, the codec nor FastAPI,
so the API process stays light.

Redis layout (``{id}`` is the RQ job id, 32 hex digits from :func:`uuid.uuid4`)::

    metalic:upload:{id}        bytes   the validated upload, TTL = result TTL
    metalic:bitstream:{id}     bytes   the encoded container, TTL = result TTL
    metalic:cancel:{id}        "1"     cancel requested for a running job
    metalic:inflight:{owner}   set     job ids counted against the key's quota
    metalic:idem:{owner}:{h}   json    idempotency record {fingerprint, job_id}
    rq:job:{id}                hash    RQ's job; meta holds owner, progress, error
"""

from __future__ import annotations

import re
from enum import Enum

from rq.job import JobStatus as RQJobStatus

KEY_PREFIX = "metalic"
"""Prefix of every Redis key metalic itself writes (RQ keeps its own ``rq:`` prefix)."""

JOB_FUNCTION = "worker.jobs.encode_image"
"""Dotted path the API enqueues; workers import it, so no pickled callables cross Redis."""

SERIALIZER = "json"
"""RQ serializer alias: JSON, never pickle, for job arguments, meta and results."""

DEFAULT_QUEUE = "metalic-encode"
"""Name of the RQ queue the API enqueues encode jobs on."""

JOB_ID_RE = re.compile(r"[0-9a-f]{32}")
"""Job ids are uuid4 hex: 122 random bits, so ids cannot be guessed."""


class JobState(str, Enum):
    """Public status of an encode job, as the API reports it."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED)


_RQ_TO_STATE = {
    RQJobStatus.CREATED: JobState.QUEUED,
    RQJobStatus.QUEUED: JobState.QUEUED,
    RQJobStatus.DEFERRED: JobState.QUEUED,
    RQJobStatus.SCHEDULED: JobState.QUEUED,
    RQJobStatus.RATE_LIMITED: JobState.QUEUED,
    RQJobStatus.READY_TO_ENQUEUE: JobState.QUEUED,
    RQJobStatus.STARTED: JobState.RUNNING,
    RQJobStatus.FINISHED: JobState.SUCCEEDED,
    RQJobStatus.FAILED: JobState.FAILED,
    RQJobStatus.STOPPED: JobState.CANCELED,
    RQJobStatus.CANCELED: JobState.CANCELED,
}


def job_state(rq_status: str | RQJobStatus, cancel_requested: bool = False) -> JobState:
    """Map an RQ status to the public :class:`JobState`.

    Args:
        rq_status: str. The status RQ stores in the job hash.
        cancel_requested: bool. True if ``DELETE /jobs/{id}`` was called: a job that
            then fails (the worker raised :class:`worker.jobs.JobCanceled`) is
            reported as canceled, not failed.
    """
    state = _RQ_TO_STATE.get(RQJobStatus(rq_status), JobState.FAILED)
    if state is JobState.FAILED and cancel_requested:
        return JobState.CANCELED
    return state


def upload_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:upload:{job_id}"


def bitstream_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:bitstream:{job_id}"


def cancel_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:cancel:{job_id}"


def inflight_key(owner: str) -> str:
    return f"{KEY_PREFIX}:inflight:{owner}"


def idempotency_key(owner: str, key_hash: str) -> str:
    return f"{KEY_PREFIX}:idem:{owner}:{key_hash}"


def job_id_from_upload_key(key: str) -> str:
    """The job id embedded in an upload key (the job function only receives the key)."""
    prefix = f"{KEY_PREFIX}:upload:"
    if not key.startswith(prefix):
        raise ValueError(f"not an upload key: {key!r}")
    return key[len(prefix) :]
