"""Job submission and lookup on Redis/RQ: the query logic the route handlers call.

:class:`JobService` owns idempotency records, the per-key in-flight quota, the
stored uploads and the mapping from RQ's job hash to :class:`~service.schemas.JobPublic`.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from datetime import datetime, timezone

import redis
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQJobStatus

from service.config import Settings
from service.errors import ProblemError
from service.schemas import JobError, JobLinks, JobPublic, JobResult, Progress
from worker import protocol
from worker.jobs import EncodeJob
from worker.outcomes import read_outcome, settle_in
from worker.protocol import FailureType, JobState, Outcome

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
        self.queue = Queue(settings.queue, connection=connection, serializer=protocol.SERIALIZER, job_class=EncodeJob)
        self._reserve = connection.register_script(_RESERVE)

    # ---- submit -----------------------------------------------------------------
    def submit(self, owner: str, data: bytes, info: dict, options: dict,
               idempotency_key: str | None = None) -> tuple[Job, bool]:
        """Store the upload and enqueue its encode job, in one transaction.

        The idempotency record, the upload, the job hash and its place in the
        queue are written by one MULTI/EXEC: an API process that dies half-way
        leaves none of them, so the key is free for the client's retry instead
        of naming a job that never existed.

        Returns:
            (job, replayed). ``replayed`` is True when the idempotency key named an
            existing job with the same payload, which is returned instead.
        """
        job_id = uuid.uuid4().hex
        fp = fingerprint(data, options)
        idem_key = None
        if idempotency_key is not None:
            idem_key = protocol.idempotency_key(owner, hashlib.sha256(idempotency_key.encode()).hexdigest())
            if self.redis.exists(idem_key):
                return self._replay(owner, idem_key, fp), True
        self._reserve_slot(owner, job_id)
        upload_key = protocol.upload_key(job_id)
        try:
            with self.redis.pipeline() as pipe:
                if idem_key:
                    pipe.watch(idem_key)
                    if pipe.exists(idem_key):
                        raise redis.WatchError(idem_key)
                pipe.multi()
                if idem_key:
                    pipe.set(idem_key, json.dumps({"fingerprint": fp, "job_id": job_id}),
                             ex=self.settings.idempotency_ttl)
                pipe.set(upload_key, data, ex=self.settings.upload_ttl)
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
                    pipeline=pipe,
                )
                pipe.execute()
        except redis.WatchError:
            # A concurrent request with the same key got there first: answer with its job.
            self.redis.zrem(protocol.inflight_key(owner), job_id)
            return self._replay(owner, idem_key, fp), True
        except BaseException:
            self.redis.zrem(protocol.inflight_key(owner), job_id)
            raise
        return job, False

    def _replay(self, owner: str, idem_key: str, fp: str) -> Job:
        raw = self.redis.get(idem_key)
        if raw is None:  # expired between EXISTS and GET: ask the client to retry
            raise ProblemError(409, "idempotency-conflict", "the idempotency record changed, retry the request",
                               headers={"Retry-After": "1"})
        record = json.loads(raw)
        if record["fingerprint"] != fp:
            raise ProblemError(422, "idempotency-key-reused",
                               "this Idempotency-Key was already used with a different payload")
        return self.get(owner, record["job_id"])

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
                pipe.exists(protocol.outcome_key(member.decode()))
            replies = pipe.execute()
        now = time.time()
        done = [
            member for (member, score), status, ended in zip(members, replies[::2], replies[1::2])
            if ended or (status is None and now - score > _UNBORN_GRACE) or (status and status.decode() in _TERMINAL_RQ)
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
            job = EncodeJob.fetch(job_id, connection=self.redis, serializer=protocol.SERIALIZER)
        except NoSuchJobError:
            raise not_found from None
        if job.meta.get("owner") != owner:
            raise not_found
        return job

    def outcome(self, job: Job) -> Outcome | None:
        return read_outcome(self.redis, job.id)

    def state(self, job: Job, outcome: Outcome | None = None) -> JobState:
        """The outcome's state once the job has one; before that, RQ's status (queued or running)."""
        if outcome is not None:
            return outcome.state
        state = protocol.job_state(job.get_status(refresh=False))
        # A terminal RQ status with no outcome: a job the workers refused (it names another function).
        return state if not state.is_terminal else JobState.FAILED

    def public(self, job: Job) -> JobPublic:
        outcome = self.outcome(job)
        state = self.state(job, outcome)
        meta = job.meta
        progress = Progress(**meta["progress"]) if state is JobState.RUNNING and meta.get("progress") else None
        result = error = None
        if outcome is not None and outcome.result is not None:
            result = JobResult(**outcome.result)
        elif outcome is not None and outcome.error is not None:
            error = JobError(**outcome.error)
        elif state is JobState.FAILED:
            error = JobError(type=FailureType.FORBIDDEN_JOB.value, detail="the workers refused to run this job")
        path = f"/jobs/{job.id}"
        ended_at = (datetime.fromtimestamp(outcome.ended_at, timezone.utc) if outcome is not None
                    else job.ended_at)
        return JobPublic(
            id=job.id,
            status=state,
            created_at=job.created_at,
            started_at=job.started_at,
            ended_at=ended_at,
            attempts=outcome.attempts if outcome is not None else int(meta.get("attempts", 0)),
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

    def bitstream(self, owner: str, job_id: str) -> tuple[bytes, str]:
        """The bitstream of a succeeded job and its sha256 (the one its outcome names)."""
        job = self.get(owner, job_id)
        outcome = self.outcome(job)
        state = self.state(job, outcome)
        if state is not JobState.SUCCEEDED:
            raise ProblemError(409, "job-not-succeeded", f"the job is {state.value}; the bitstream exists once it succeeded")
        data = self.redis.get(protocol.bitstream_key(job.id))
        if data is None:
            raise ProblemError(410, "bitstream-expired", "the bitstream has expired")
        return data, outcome.result["sha256"]

    # ---- cancel -----------------------------------------------------------------
    def cancel(self, owner: str, job_id: str) -> Job:
        """Cancel a queued job now, or ask the worker to stop a running one at its next step.

        The flag is set first, so a worker that takes the job at this moment
        stops at its first step. A job that no execution holds is then ended
        ``canceled`` in a transaction watching its lease and outcome: if a
        worker took it meanwhile, the transaction aborts and the flag does the rest.
        """
        job = self.get(owner, job_id)
        state = self.state(job, self.outcome(job))
        if state.is_terminal:
            raise ProblemError(409, "job-finished", f"the job is already {state.value}")
        self.redis.set(protocol.cancel_key(job.id), b"1", ex=self.settings.failure_ttl)
        if state is JobState.QUEUED:
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(protocol.lease_key(job.id), protocol.outcome_key(job.id), job.key)
                    if not pipe.exists(protocol.lease_key(job.id), protocol.outcome_key(job.id)):
                        job.refresh()
                        pipe.multi()
                        settle_in(pipe, job, self.queue, Outcome.failed(
                            FailureType.CANCELED.value, "canceled by the client",
                            attempts=int(job.meta.get("attempts", 0))))
                        pipe.zrem(protocol.inflight_key(owner), job.id)
                        pipe.execute()
                except redis.WatchError:
                    pass  # a worker took it: it stops at its first step
        job.refresh()
        return job

    def worker_count(self) -> int:
        from rq.worker import Worker

        return Worker.count(connection=self.redis, queue=self.queue)

    def queue_depth(self) -> int:
        return self.queue.count
