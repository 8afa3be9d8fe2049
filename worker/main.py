"""``metalic worker``: an RQ worker that loads the model once and gives every job exactly one outcome.

Typical workflow (what ``metalic worker`` does):

1. Read :class:`~worker.config.WorkerSettings` from the environment and flags.
2. Load the encoder (CUDA when present) *before* registering, so a registered
   worker always has its model: ``/readyz`` counts registered workers.
3. Start the reaper thread (:mod:`worker.reaper`) and the liveness watcher
   process (:mod:`worker.liveness`, which kills this worker if a hang holding the
   GIL outlasts its lease), and run :class:`EncodeWorker` on the queue with the
   JSON serializer.
4. If Redis goes away while idle, back off and register again. On SIGTERM or
   SIGINT finish the current job and exit (drain); a second signal stops at
   once and puts the job back on the queue.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence

import redis
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.timeouts import JobTimeoutException
from rq.utils import now
from rq.worker import SimpleWorker, WorkerStatus
from rq.worker_registration import clean_worker_registry

from worker import jobs
from worker.config import WorkerSettings
from worker.failures import Failure, classify, free_accelerator_memory
from worker.fencing import Lease, LeaseLost, current_lease, fast_client
from worker.jobs import EncodeJob, is_allowed
from worker.liveness import LivenessReporter, stale_after, start_watcher
from worker.outcomes import outcome_ttl
from worker.protocol import SERIALIZER, FailureType, Outcome
from worker.reaper import Reaper
from worker.watchdog import Watchdog, hard_exit

log = logging.getLogger("metalic.worker")


def renew_timeout(interval: float) -> float:
    """Seconds one lease renewal may take before it counts as failed (the watchdog must not block)."""
    return max(1.0, interval / 2)


def with_execution(method: Callable, execution: Execution, *args, **kwargs):
    """Call an RQ bookkeeping method for ``execution``.

    RQ 3 runs several executions per worker and names the one in each call;
    RQ 2.10 to 2.x keeps one, ``worker.execution``, which is set when it is
    registered (:meth:`EncodeWorker.prepare_execution`).
    """
    if "execution" in inspect.signature(method).parameters:
        kwargs["execution"] = execution
    return method(*args, **kwargs)


class EncodeWorker(SimpleWorker):
    """A SimpleWorker whose jobs run under a lease, a watchdog and compare-and-set commits.

    ::

        dequeue ─> register execution + take lease (one MULTI) ─> perform (model in this process, no fork)
                    watchdog thread: renew lease while the main thread lives; exit when hung or cut off
        outcome:    success / deterministic failure ─> commit (only if the lease is still ours) ─> RQ bookkeeping
                    transient failure with retries left ─> requeue (only if the lease is still ours)
                    lease lost ─> drop the result, write nothing
        watcher process (worker.liveness): SIGKILL the worker if the watchdog's ticks stop past the lease (GIL held)

    RQ's StartedJobRegistry and intermediate-queue cleanups, which requeue by
    timestamp and know nothing of leases, are replaced by :class:`~worker.reaper.Reaper`.

    .. note:: No fork: the model is loaded once and CUDA is never touched in a
       forked child (CUDA cannot be re-initialized after fork).

    Args:
        heartbeat_grace: int. Seconds a lease outlives the renewal interval.
        stall_timeout: float. Seconds the main thread may sit in one native call.
        stop_process: callable(code). How the watchdog ends the process (a test seam).
        liveness: LivenessReporter | None. The pipe to this process's watcher (:mod:`worker.liveness`).
    """

    job_class = EncodeJob

    def __init__(self, *args, heartbeat_grace: int = 10, stall_timeout: float = 300.0,
                 stop_process: Callable[[int], None] = hard_exit, liveness: LivenessReporter | None = None,
                 **kwargs):
        kwargs.setdefault("job_class", EncodeJob)
        super().__init__(*args, **kwargs)
        self.heartbeat_grace = heartbeat_grace
        self.stall_timeout = stall_timeout
        self.stop_process = stop_process
        self.liveness = liveness
        self.shutdown_requested = False
        self._leases: dict[str, Lease] = {}
        self._renew_connection = fast_client(self.connection, renew_timeout(self.job_monitoring_interval))

    @property
    def lease_ttl(self) -> int:
        return int(self.job_monitoring_interval + self.heartbeat_grace)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        # RQ's own registry entries outlive the lease by a whole job timeout, so RQ never judges a
        # job abandoned before the reaper, which judges by the lease, has acted on it.
        return int((job.timeout or 0) + self.lease_ttl + 60)

    def clean_registries(self) -> None:
        for queue in self.queues:
            if queue.acquire_maintenance_lock():
                for registry in (queue.finished_job_registry, queue.failed_job_registry,
                                 queue.deferred_job_registry, queue.canceled_job_registry):
                    registry.cleanup()
                clean_worker_registry(queue)
                queue.release_maintenance_lock()
        self.last_cleaned_at = now()

    # ---- one job ------------------------------------------------------------------
    def prepare_execution(self, job: Job) -> Execution | None:
        """Register the execution and take the job's lease in one transaction; None if the lease is not ours."""
        with self.connection.pipeline() as pipe:
            execution = Execution.create(job, self.get_heartbeat_ttl(job), pipeline=pipe, worker_name=self.name)
            lease = Lease(self.connection, job.id, execution.id, self.lease_ttl, self._renew_connection)
            index = len(pipe)
            lease.acquire_in(pipe)
            self.set_state(WorkerStatus.BUSY, pipeline=pipe)
            acquired = pipe.execute()[index]
        if acquired == 1:
            self.execution = execution  # (RQ 3 keeps a dict of executions behind this property)
            self._leases[execution.id] = lease
            return execution
        # Another execution holds the job (its id was on the queue twice) or it has already ended.
        log.info("worker %s: job %s %s; skipped", self.name, job.id,
                 "has already ended" if acquired == -1 else "is being run by another execution")
        with self.connection.pipeline() as pipe:
            execution.delete(job, pipe)
            pipe.lrem(Queue(job.origin, connection=self.connection).intermediate_queue_key, 1, job.id)
            pipe.execute()
        return None

    def execute_job(self, job: Job, queue: Queue):
        if not is_allowed(job):
            self._refuse(job, queue)
            return
        execution = self.prepare_execution(job)
        if execution is None:
            self.set_state(WorkerStatus.IDLE)
            return
        lease = self._leases.pop(execution.id)
        watchdog = Watchdog(
            lease,
            heartbeat=lambda: self._beat(job, execution),
            interval=self.job_monitoring_interval,
            stall_timeout=self.stall_timeout,
            hard_timeout=(job.timeout or queue.DEFAULT_TIMEOUT) + self.lease_ttl,
            give_back=lambda: self._settle_failure(job, queue, execution, lease, Failure(
                FailureType.WORKER_STALLED.value, "the worker hung inside native code on this job", True)),
            fail_timeout=lambda: self._settle_failure(job, queue, execution, lease, classify(JobTimeoutException())),
            stop_process=self.stop_process,
            liveness=self.liveness,
        )
        token = current_lease.set(lease)
        watchdog.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            watchdog.stop()
            if self.liveness is not None:
                self.liveness.idle()
            current_lease.reset(token)
        self.set_state(WorkerStatus.IDLE)

    def _beat(self, job: Job, execution: Execution) -> None:
        """RQ's worker and execution heartbeats, on the short-timeout client (the watchdog must not block)."""
        with self._renew_connection.pipeline() as pipe:
            self.heartbeat(self.job_monitoring_interval + 60, pipeline=pipe)
            execution.heartbeat(job.started_job_registry, self.get_heartbeat_ttl(job), pipeline=pipe)
            pipe.execute()

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        lease = current_lease.get()
        try:
            self.prepare_job_execution(job, remove_from_intermediate_queue=len(self.queues) == 1)
            job.started_at = now()
            with self.death_penalty_class(job.timeout or queue.DEFAULT_TIMEOUT, JobTimeoutException, job_id=job.id):
                value = job.perform()
        except LeaseLost as exc:
            self._drop(job, execution, str(exc))
            return False
        except BaseException as exc:  # noqa: BLE001 - every way out of the job code gets an outcome
            if lease.released:
                # The success was committed and something (a late SIGALRM) struck on the way out.
                log.warning("job %s: %r after its outcome was committed; kept the outcome", job.id, exc)
                return self._bookkeep_success(job, queue, execution, None)
            failure = classify(exc)
            if isinstance(exc, (SystemExit, KeyboardInterrupt)):
                failure = Failure(FailureType.BACKEND_UNAVAILABLE.value, "the worker was stopped", True)
            if failure.type == FailureType.INTERNAL_ERROR.value:
                log.error("job %s: internal error", job.id, exc_info=exc)
            else:
                log.info("job %s: %s (%s)", job.id, failure.type, exc)
            self._settle_failure(job, queue, execution, lease, failure,
                                 consume_retry=not isinstance(exc, (SystemExit, KeyboardInterrupt)))
            if isinstance(exc, (SystemExit, KeyboardInterrupt)):
                raise
            return False
        return self._bookkeep_success(job, queue, execution, value)

    def _bookkeep_success(self, job: Job, queue: Queue, execution: Execution, value) -> bool:
        """RQ's status, result and registries after :func:`encode_image` committed the outcome under the lease."""
        job.ended_at = now()
        job._result = value
        job._status = JobStatus.FINISHED
        try:
            with_execution(self.handle_job_success, execution, job=job, queue=queue,
                           started_job_registry=queue.started_job_registry)
        except redis.RedisError as exc:
            log.warning("job %s: succeeded, but RQ's bookkeeping failed (%s); the reaper repairs it", job.id, exc)
        return True

    def _settle_failure(self, job: Job, queue: Queue, execution: Execution, lease: Lease, failure: Failure,
                        consume_retry: bool = True) -> None:
        """Retry a transient failure while retries are left; otherwise commit the failure as the outcome."""
        if failure.type == FailureType.OUT_OF_MEMORY.value:
            free_accelerator_memory()
        if failure.transient and (not consume_retry or (job.retries_left or 0) > 0):
            job.meta.setdefault("errors", []).append(failure.type)

            def writes(pipe) -> None:
                if consume_retry:
                    job.retry(queue, pipe)
                else:  # a stopped worker: the job goes back first in line, no retry spent
                    queue._enqueue_job(job, pipeline=pipe, at_front=True)
                pipe.lrem(queue.intermediate_queue_key, 0, job.id)
                with_execution(self.cleanup_execution, execution, job, pipe)

            if lease.requeue(writes):
                log.warning("job %s: %s; requeued (%s retries left)", job.id, failure.type, job.retries_left)
            else:
                self._drop(job, execution, "lease lost before the requeue")
            return
        outcome = Outcome.failed(failure.type, failure.detail, execution=execution.id,
                                 attempts=int(job.meta.get("attempts", 0)))
        if not lease.commit(outcome, outcome_ttl(job, outcome.state)):
            self._drop(job, execution, "lease lost before the failure was recorded")
            return
        log.info("job %s: outcome %s committed by execution %s", job.id, outcome.state.value, execution.id)
        job.retries_left = 0
        job.ended_at = now()
        try:
            with_execution(self.handle_job_failure, execution, job, queue,
                           exc_string=f"{failure.type}: {failure.detail}")
        except redis.RedisError as exc:
            log.warning("job %s: failed, but RQ's bookkeeping failed (%s); the reaper repairs it", job.id, exc)

    def _drop(self, job: Job, execution: Execution, why: str) -> None:
        """This execution lost its job: remove only its own execution record, touch nothing of the job."""
        log.warning("job %s: execution %s dropped its work: %s", job.id, execution.id, why)
        try:
            with self.connection.pipeline() as pipe:
                with_execution(self.cleanup_execution, execution, job, pipe)
                pipe.execute()
        except redis.RedisError:
            pass  # the reaper removes dead entries

    def _refuse(self, job: Job, queue: Queue) -> None:
        """A job that names another function: fail it without importing or calling anything it names."""
        log.error("worker %s: refused job %s: it names %r (only %s runs here)", self.name, job.id, job.func_name,
                  jobs.protocol.JOB_FUNCTION)
        job.retries_left = 0
        job.ended_at = now()
        with self.connection.pipeline() as pipe:
            pipe.lrem(queue.intermediate_queue_key, 0, job.id)
            pipe.execute()
        self.handle_job_failure(job, queue, exc_string=f"{FailureType.FORBIDDEN_JOB.value}: not the encode job")

    def request_stop(self, signum, frame):
        self.shutdown_requested = True
        super().request_stop(signum, frame)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metalic worker", description="Run an encode worker (RQ, JSON serializer).")
    parser.add_argument("--url", help="Redis URL (default: $REDIS_URL or redis://localhost:6379/0)")
    parser.add_argument("--queue", help="queue name (default: $METALIC_QUEUE or metalic-encode)")
    parser.add_argument("--burst", action="store_true", help="quit when the queue is empty")
    parser.add_argument("--name", help="worker name (default: host-pid-random)")
    parser.add_argument("--device", help="torch device (default: CUDA when present, else CPU)")
    parser.add_argument("--model", help="model to preload (default: $METALIC_MODEL or metalic-vr)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``metalic worker`` and ``python -m worker``. Returns the exit code."""
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in {"redis_url": args.url, "queue": args.queue, "device": args.device,
                                   "model": args.model}.items() if v}
    settings = WorkerSettings(**overrides)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    jobs._settings.cache_clear()
    jobs.load_encoder(settings.model, settings.device, settings.encoder_factory, settings.max_pixels)

    base_name = args.name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    connection = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=30,
                                      health_check_interval=30)
    reaper = Reaper(connection, [settings.queue], interval=settings.reap_interval).start()
    liveness = start_watcher(stale_after(settings.job_monitoring_interval,
                                         renew_timeout(settings.job_monitoring_interval)))
    backoff, attempt = 1.0, 0
    try:
        while True:
            name = base_name if attempt == 0 else f"{base_name}-{attempt}"
            attempt += 1
            worker = None
            try:
                worker = EncodeWorker(
                    [settings.queue],
                    name=name,
                    connection=connection,
                    serializer=SERIALIZER,
                    worker_ttl=settings.worker_ttl,
                    job_monitoring_interval=settings.job_monitoring_interval,
                    maintenance_interval=settings.maintenance_interval,
                    heartbeat_grace=settings.heartbeat_grace,
                    stall_timeout=settings.stall_timeout,
                    liveness=liveness,
                )
                worker.work(burst=args.burst, logging_level=settings.log_level)
                backoff = 1.0
            except redis.RedisError as exc:
                log.error("worker %s: Redis unavailable (%s); retrying in %.0fs", name, exc, backoff)
            if args.burst or (worker is not None and worker.shutdown_requested):
                return 0
            time.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
    finally:
        reaper.stop()
        liveness.close()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
