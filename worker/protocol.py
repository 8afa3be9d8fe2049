"""The contract between the API and the workers: Redis key layout and job states.

Both sides import this module; it imports neither torch, the codec nor FastAPI,
so the API process stays light.

Redis layout (``{id}`` is the RQ job id, 32 hex digits from :func:`uuid.uuid4`)::

    metalic:upload:{id}        bytes   the validated upload; deleted when the job reaches a terminal state
    metalic:bitstream:{id}     bytes   the encoded container, TTL = result TTL
    metalic:outcome:{id}       json    the job's one terminal outcome (:class:`Outcome`), written once
    metalic:lease:{id}         str     id of the one execution allowed to run the job, TTL = lease TTL
    metalic:cancel:{id}        "1"     cancel requested for a running job
    metalic:inflight:{owner}   zset    job ids counted against the tenant's quota
    metalic:idem:{owner}:{h}   json    idempotency record {fingerprint, job_id}
    metalic:rate:{key}:{t}     int     requests of one API key in the window starting at t
    rq:job:{id}                hash    RQ's job; meta holds owner, attempts, progress

The outcome key is the truth about a finished job: the worker's commit writes
it, with the bitstream, only while it holds the lease (a compare-and-set on its
execution id), and nobody writes it twice. RQ's own status follows it.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from rq.job import JobStatus as RQJobStatus

KEY_PREFIX = "metalic"
"""Prefix of every Redis key metalic itself writes (RQ keeps its own ``rq:`` prefix)."""

JOB_FUNCTION = "worker.jobs.encode_image"
"""Dotted path the API enqueues; workers import it, so no pickled callables cross Redis."""

SERIALIZER = "json"
"""RQ serializer alias: JSON, never pickle, for job arguments, meta and results."""

DEFAULT_QUEUE = "metalic-encode"
"""Name of the RQ queue the API enqueues encode jobs on."""

DEFAULT_RESULT_TTL = 7 * 24 * 3600
"""Seconds. How long results are kept when a job names no result TTL of its own."""

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
    "created": JobState.QUEUED,
    "queued": JobState.QUEUED,
    "deferred": JobState.QUEUED,
    "scheduled": JobState.QUEUED,
    "rate_limited": JobState.QUEUED,
    "ready_to_enqueue": JobState.QUEUED,
    "started": JobState.RUNNING,
    "finished": JobState.SUCCEEDED,
    "failed": JobState.FAILED,
    "stopped": JobState.CANCELED,
    "canceled": JobState.CANCELED,
}
"""RQ's status values (strings: RQ releases add statuses, the mapping must not depend on which exist)."""


def job_state(rq_status: str | RQJobStatus) -> JobState:
    """Map an RQ status to the public :class:`JobState` (used until the job has an :class:`Outcome`)."""
    value = rq_status.value if isinstance(rq_status, Enum) else str(rq_status)
    return _RQ_TO_STATE.get(value, JobState.FAILED)


class FailureType(str, Enum):
    """Stable ``error.type`` of a failed job that is not the codec's own (those keep the codec's slug)."""

    CANCELED = "canceled"
    INPUT_MISSING = "input-missing"
    JOB_TIMEOUT = "job-timeout"
    WORKER_LOST = "worker-lost"
    WORKER_STALLED = "worker-stalled"
    OUT_OF_MEMORY = "out-of-memory"
    BACKEND_UNAVAILABLE = "backend-unavailable"
    FORBIDDEN_JOB = "forbidden-job"
    INTERNAL_ERROR = "internal-error"


@dataclass
class Outcome:
    """The one terminal record of a job (``metalic:outcome:{id}``), JSON in Redis.

    Args:
        state: JobState. succeeded, failed or canceled.
        execution: str | None. Execution id that produced it (None when the
            service or the reaper settled the job without running it).
        attempts: int. Executions that started the job code.
        ended_at: float. Unix time of the commit.
        result: dict | None. ``{"bytes", "sha256", "metadata"}`` on success.
        error: dict | None. ``{"type", "detail"}`` otherwise.
    """

    state: JobState
    execution: str | None = None
    attempts: int = 0
    ended_at: float = field(default_factory=time.time)
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "state": self.state.value}, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Outcome:
        data = json.loads(raw)
        data["state"] = JobState(data["state"])
        return cls(**data)

    @classmethod
    def failed(cls, error_type: str, detail: str, **kwargs: Any) -> Outcome:
        state = JobState.CANCELED if error_type == FailureType.CANCELED.value else JobState.FAILED
        return cls(state=state, error={"type": error_type, "detail": detail}, **kwargs)


def upload_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:upload:{job_id}"


def bitstream_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:bitstream:{job_id}"


def outcome_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:outcome:{job_id}"


def lease_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:lease:{job_id}"


def rate_key(key_id: str, window_start: int) -> str:
    return f"{KEY_PREFIX}:rate:{key_id}:{window_start}"


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
