"""Job submission and lookup on Redis/RQ: the query logic the route handlers call.

:class:`JobService` owns idempotency records, the per-key in-flight quota, the
stored uploads and the mapping from RQ's job hash to :class:`~service.schemas.JobPublic`.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

import redis
from rq import Queue, Retry
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQJobStatus
from rq.results import Result

from service.config import Settings
from service.errors import ProblemError
from service.schemas import JobError, JobLinks, JobPublic, JobResult, Progress
from worker import protocol
from worker.protocol import JobState

_RESERVE = """
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  return 1
end
return 0
"""
"""Check-and-add in one step, so concurrent submits cannot both take the last slot."""

_TERMINAL_RQ = {RQJobStatus.FINISHED.value, RQJobStatus.FAILED.value, RQJobStatus.STOPPED.value,
                RQJobStatus.CANCELED.value}
_UNBORN_GRACE = 60.0
"""Seconds. A reserved slot whose job hash does not exist yet is only freed after this."""


def fingerprint(data: bytes, options: dict) -> str:
    """Hash of the upload and its normalized options: what an idempotency key is bound to."""
    h = hashlib.sha256(hashlib.sha256(data).digest())
    h.update(json.dumps(options, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


class JobService:
    """Submit, read and cancel encode jobs for one owner (a hashed API key).

    Args:
        connection: redis.Redis. Binary-safe client (``decode_responses=False``).
        settings: Settings. Limits and TTLs.
    """

    def __init__(self, connection: redis.Redis, settings: Settings):
        self.redis = connection
        self.settings = settings
        self.queue = Queue(settings.queue, connection=connection, serializer=protocol.SERIALIZER)
        self._reserve = connection.register_script(_RESERVE)

    # ---- submit -----------------------------------------------------------------
    def submit(self, owner: str, data: bytes, info: dict, options: dict,
               idempotency_key: str | None = None) -> tuple[Job, bool]:
        """Store the upload and enqueue its encode job.

        Returns:
            (job, replayed). ``replayed`` is True when the idempotency key named an
            existing job with the same payload, which is returned instead.
        """
        job_id = uuid.uuid4().hex
        idem_key = None
        if idempotency_key is not None:
            idem_key = protocol.idempotency_key(owner, hashlib.sha256(idempotency_key.encode()).hexdigest())
            record = json.dumps({"fingerprint": fingerprint(data, options), "job_id": job_id})
            if not self.redis.set(idem_key, record, nx=True, ex=self.settings.idempotency_ttl):
                return self._replay(owner, idem_key, fingerprint(data, options)), True
        try:
            self._reserve_slot(owner, job_id)
        except BaseException:
            if idem_key:
                self.redis.delete(idem_key)
            raise
        upload_key = protocol.upload_key(job_id)
        try:
            self.redis.set(upload_key, data, ex=self.settings.result_ttl)
            job = self.queue.enqueue_call(
                protocol.JOB_FUNCTION,
                args=(upload_key, options),
                job_id=job_id,
                timeout=self.settings.job_timeout,
                result_ttl=self.settings.result_ttl,
                failure_ttl=self.settings.failure_ttl,
                ttl=None,
                description=f"encode {job_id}",
                meta={"owner": owner, "input": info, "options": options, "attempts": 0},
                retry=Retry(max=self.settings.job_retries) if self.settings.job_retries else None,
            )
        except BaseException:
            with self.redis.pipeline() as pipe:
                pipe.delete(upload_key)
                pipe.zrem(protocol.inflight_key(owner), job_id)
                if idem_key:
                    pipe.delete(idem_key)
                pipe.execute()
            raise
        return job, False

    def _replay(self, owner: str, idem_key: str, fp: str) -> Job:
        raw = self.redis.get(idem_key)
        if raw is None:  # expired between SET NX and GET: ask the client to retry
            raise ProblemError(409, "idempotency-conflict", "the idempotency record changed, retry the request",
                               headers={"Retry-After": "1"})
        record = json.loads(raw)
        if record["fingerprint"] != fp:
            raise ProblemError(422, "idempotency-key-reused",
                               "this Idempotency-Key was already used with a different payload")
        try:
            return self.get(owner, record["job_id"])
        except ProblemError:
            # The first request holding this key is still storing its upload.
            raise ProblemError(409, "idempotency-in-progress", "a request with this Idempotency-Key is in progress",
                               headers={"Retry-After": "1"}) from None

    def _reserve_slot(self, owner: str, job_id: str) -> None:
        key = protocol.inflight_key(owner)
        self.prune_in_flight(owner)
        ttl = self.settings.job_timeout * (self.settings.job_retries + 1) + self.settings.result_ttl
        if not self._reserve(keys=[key], args=[self.settings.max_jobs_in_flight, time.time(), job_id, ttl]):
            raise ProblemError(
                429, "too-many-jobs",
                f"this API key already has {self.settings.max_jobs_in_flight} jobs queued or running",
                headers={"Retry-After": str(self.settings.retry_after)},
            )

    def prune_in_flight(self, owner: str) -> int:
        """Drop finished jobs from the owner's in-flight set; returns how many remain."""
        key = protocol.inflight_key(owner)
        members = self.redis.zrange(key, 0, -1, withscores=True)
        if not members:
            return 0
        with self.redis.pipeline(transaction=False) as pipe:
            for member, _ in members:
                pipe.hget(Job.key_for(member.decode()), "status")
            statuses = pipe.execute()
        now = time.time()
        done = [
            member for (member, score), status in zip(members, statuses)
            if (status is None and now - score > _UNBORN_GRACE) or (status and status.decode() in _TERMINAL_RQ)
        ]
        if done:
            self.redis.zrem(key, *done)
        return len(members) - len(done)

    # ---- read -------------------------------------------------------------------
    def get(self, owner: str, job_id: str) -> Job:
        """The owner's job, or a 404 (the same 404 for another key's job: ids do not leak)."""
        not_found = ProblemError(404, "job-not-found", "no such job")
        if not protocol.JOB_ID_RE.fullmatch(job_id):
            raise not_found
        try:
            job = Job.fetch(job_id, connection=self.redis, serializer=protocol.SERIALIZER)
        except NoSuchJobError:
            raise not_found from None
        if job.meta.get("owner") != owner:
            raise not_found
        return job

    def state(self, job: Job) -> JobState:
        return protocol.job_state(job.get_status(refresh=False), bool(self.redis.exists(protocol.cancel_key(job.id))))

    def public(self, job: Job) -> JobPublic:
        state = self.state(job)
        meta = job.meta
        progress = Progress(**meta["progress"]) if state is JobState.RUNNING and meta.get("progress") else None
        result = error = None
        if state is JobState.SUCCEEDED:
            value = job.return_value() or {}
            result = JobResult(bytes=value.get("bytes", 0), sha256=value.get("sha256", ""),
                               metadata=value.get("metadata", {}))
        elif state in (JobState.FAILED, JobState.CANCELED):
            error = self._error(job, state)
        path = f"/jobs/{job.id}"
        return JobPublic(
            id=job.id,
            status=state,
            created_at=job.created_at,
            started_at=job.started_at,
            ended_at=job.ended_at,
            attempts=int(meta.get("attempts", 0)),
            input=meta.get("input"),
            options=meta.get("options"),
            progress=progress,
            result=result,
            error=error,
            links=JobLinks(
                self=path,
                bitstream=f"{path}/bitstream" if state is JobState.SUCCEEDED else None,
                cancel=None if state.is_terminal else path,
            ),
        )

    def _error(self, job: Job, state: JobState) -> JobError:
        if state is JobState.CANCELED:
            return JobError(type="canceled", detail="canceled by the client")
        recorded = job.meta.get("error")
        if recorded:
            return JobError(type=recorded.get("type", "internal-error"), detail=recorded.get("detail", ""))
        latest = job.latest_result()
        if latest is not None and latest.type == Result.Type.FAILED and "AbandonedJobError" in (latest.exc_string or ""):
            return JobError(type="worker-lost", detail="the worker running this job stopped and no retries were left")
        if latest is not None and latest.type == Result.Type.FAILED and "terminated unexpectedly" in (latest.exc_string or ""):
            return JobError(type="worker-lost", detail="the worker process running this job died")
        return JobError(type="internal-error", detail="the job failed")

    def bitstream(self, owner: str, job_id: str) -> bytes:
        job = self.get(owner, job_id)
        state = self.state(job)
        if state is not JobState.SUCCEEDED:
            raise ProblemError(409, "job-not-succeeded", f"the job is {state.value}; the bitstream exists once it succeeded")
        data = self.redis.get(protocol.bitstream_key(job.id))
        if data is None:
            raise ProblemError(410, "bitstream-expired", "the bitstream has expired")
        return data

    # ---- cancel -----------------------------------------------------------------
    def cancel(self, owner: str, job_id: str) -> Job:
        """Cancel a queued job now, or ask the worker to stop a running one at its next step."""
        job = self.get(owner, job_id)
        state = self.state(job)
        if state.is_terminal:
            raise ProblemError(409, "job-finished", f"the job is already {state.value}")
        # The flag first: if a worker dequeues the job right now, it stops at its first step.
        self.redis.set(protocol.cancel_key(job.id), b"1", ex=self.settings.failure_ttl)
        if state is JobState.QUEUED:
            try:
                job.cancel()
            except InvalidJobOperation:
                pass
            self.redis.delete(protocol.upload_key(job.id))
            self.redis.zrem(protocol.inflight_key(owner), job.id)
        job.refresh()
        return job

    def worker_count(self) -> int:
        from rq.worker import Worker

        return Worker.count(connection=self.redis, queue=self.queue)

    def queue_depth(self) -> int:
        return self.queue.count
