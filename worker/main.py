"""``metalic worker``: an RQ worker that loads the model once and survives Redis restarts.

Typical workflow (what ``metalic worker`` does):

1. Read :class:`~worker.config.WorkerSettings` from the environment and flags.
2. Load the encoder (CUDA when present) *before* registering, so a registered
   worker always has its model: ``/readyz`` counts registered workers.
3. Run :class:`EncodeWorker` on the queue with the JSON serializer.
4. If Redis goes away, back off and register again; stop on SIGTERM/SIGINT
   after the current job (a second signal stops at once; the job is retried).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence

import redis
from rq.job import Job
from rq.queue import Queue
from rq.worker import SimpleWorker, WorkerStatus

from worker import jobs
from worker.config import WorkerSettings
from worker.protocol import SERIALIZER

log = logging.getLogger("metalic.worker")


class EncodeWorker(SimpleWorker):
    """A SimpleWorker whose heartbeat goes on while the job runs in-process.

    RQ's forking ``Worker`` heartbeats from the parent while the child works;
    ``SimpleWorker`` runs the job in its own main thread and so sends no
    heartbeat until the job ends, which makes RQ wait ``job.timeout + 60`` s
    before it treats the job of a dead worker as abandoned. Here a thread keeps
    the worker, execution and StartedJobRegistry entries alive every
    ``job_monitoring_interval`` seconds with a TTL of interval + grace, so a
    killed worker's job is requeued (``Retry``) within about
    interval + grace + ``maintenance_interval`` seconds.

    ::

        main thread:  dequeue ──> perform_job (model in this process, no fork) ──> result
        heartbeat thread:   └─ every interval: worker/execution/registry TTL = interval + grace

    .. note:: No fork: the model is loaded once and CUDA is never touched in a
       forked child (CUDA cannot be re-initialized after fork).
    """

    heartbeat_grace: int = 20

    def __init__(self, *args, heartbeat_grace: int = 20, **kwargs):
        super().__init__(*args, **kwargs)
        self.heartbeat_grace = heartbeat_grace
        self.shutdown_requested = False

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return int(self.job_monitoring_interval + self.heartbeat_grace)

    def execute_job(self, job: Job, queue: Queue):
        execution = self.prepare_execution(job)
        stop = threading.Event()
        beat = threading.Thread(
            target=self._keep_alive, args=(job, execution, stop), name="metalic-heartbeat", daemon=True
        )
        beat.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            stop.set()
            beat.join()
        self.set_state(WorkerStatus.IDLE)

    def _keep_alive(self, job: Job, execution, stop: threading.Event) -> None:
        while not stop.wait(self.job_monitoring_interval):
            try:
                self.maintain_heartbeats(job, execution)
            except redis.RedisError as exc:
                log.warning("worker %s: heartbeat failed: %s", self.name, exc)

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
    connection = redis.Redis.from_url(settings.redis_url)
    backoff, attempt = 1.0, 0
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
            )
            worker.work(burst=args.burst, logging_level=settings.log_level)
            backoff = 1.0
        except redis.RedisError as exc:
            log.error("worker %s: Redis unavailable (%s); retrying in %.0fs", name, exc, backoff)
        if args.burst or (worker is not None and worker.shutdown_requested):
            return 0
        time.sleep(backoff)
        backoff = min(backoff * 2, 30.0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
