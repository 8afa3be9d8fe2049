"""Jobs on the private Redis for the worker tests: enqueue like the API does, run a burst worker in process."""

from __future__ import annotations

import io
import uuid

from PIL import Image
from rq import Queue, Retry
from rq.job import Job

from worker import protocol
from worker.jobs import EncodeJob
from worker.main import EncodeWorker


class Exits:
    """Records what the watchdog would have done to the process, so a test's own process survives."""

    def __init__(self):
        self.codes: list[int] = []

    def __call__(self, code: int) -> None:
        self.codes.append(code)


def png(width=24, height=16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_queue(connection, name: str = "test-encode") -> Queue:
    return Queue(name, connection=connection, serializer=protocol.SERIALIZER, job_class=EncodeJob)


def enqueue(queue: Queue, options=None, data=None, retries=2, timeout=60) -> Job:
    job_id = uuid.uuid4().hex
    key = protocol.upload_key(job_id)
    queue.connection.set(key, data if data is not None else png())
    return queue.enqueue_call(protocol.JOB_FUNCTION, args=(key, options or {"preset": "fast"}), job_id=job_id,
                              timeout=timeout, result_ttl=3600, failure_ttl=3600,
                              meta={"owner": "o", "attempts": 0}, retry=Retry(max=retries) if retries else None)


def make_worker(queue: Queue, exits: Exits | None = None, **kwargs) -> EncodeWorker:
    kwargs.setdefault("job_monitoring_interval", 1)
    kwargs.setdefault("heartbeat_grace", 2)
    return EncodeWorker([queue], connection=queue.connection, serializer=protocol.SERIALIZER,
                        stop_process=exits or Exits(), **kwargs)


def run_burst(queue: Queue, exits: Exits | None = None, **kwargs) -> EncodeWorker:
    worker = make_worker(queue, exits, **kwargs)
    worker.work(burst=True, logging_level="WARNING")
    return worker


def outcome(queue: Queue, job_id: str) -> protocol.Outcome | None:
    from worker.outcomes import read_outcome

    return read_outcome(queue.connection, job_id)
