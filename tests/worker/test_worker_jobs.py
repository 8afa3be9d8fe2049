"""worker.jobs.encode_image and EncodeWorker, on the private Redis with the fake encoder."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from worker import jobs, protocol
from worker.main import EncodeWorker
from worker.protocol import JobState


def png(width=24, height=16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def encoder(fake_codec, monkeypatch):
    monkeypatch.setattr(jobs, "_encoder", fake_codec.Encoder())
    return jobs._encoder


@pytest.fixture
def queue(redis_conn):
    return Queue("test-encode", connection=redis_conn, serializer=protocol.SERIALIZER)


def enqueue(queue, options=None, data=None, retries=2) -> Job:
    job_id = __import__("uuid").uuid4().hex
    key = protocol.upload_key(job_id)
    queue.connection.set(key, data if data is not None else png())
    return queue.enqueue_call(protocol.JOB_FUNCTION, args=(key, options or {"preset": "fast"}), job_id=job_id,
                              timeout=60, result_ttl=3600, failure_ttl=3600, meta={"owner": "o", "attempts": 0},
                              retry=Retry(max=retries) if retries else None)


def run_burst(queue, **kwargs):
    worker = EncodeWorker([queue], connection=queue.connection, serializer=protocol.SERIALIZER,
                          job_monitoring_interval=1, heartbeat_grace=2, **kwargs)
    worker.work(burst=True, logging_level="WARNING")
    return worker


class TestEncodeImage:
    def test_success_stores_bitstream_and_returns_json(self, queue, encoder, fake_codec):
        job = enqueue(queue)
        run_burst(queue)
        job.refresh()
        assert job.get_status() == JobStatus.FINISHED
        value = job.return_value()
        assert set(value) == {"bitstream_key", "bytes", "sha256", "metadata"}
        bitstream = queue.connection.get(value["bitstream_key"])
        assert len(bitstream) == value["bytes"]
        decoded = fake_codec.decode(bitstream).image
        assert decoded.size == (24, 16)
        assert job.meta["attempts"] == 1
        assert job.meta["progress"]["stage"] == "done"
        assert 0 < queue.connection.ttl(value["bitstream_key"]) <= 3600

    def test_progress_is_published_in_meta(self, queue, encoder, monkeypatch):
        seen = []
        original = jobs.ProgressPublisher.publish

        def spy(self, progress):
            seen.append(dict(progress))
            original(self, progress)

        monkeypatch.setattr(jobs.ProgressPublisher, "publish", spy)
        monkeypatch.setattr(jobs.ProgressPublisher, "__init__",
                            lambda self, job, min_interval=0.5: (setattr(self, "job", job),
                                                                 setattr(self, "min_interval", 0.0),
                                                                 setattr(self, "_last_write", 0.0),
                                                                 setattr(self, "_last_stage", None))[0])
        enqueue(queue, {"preset": "fast", "refine_steps": 3})
        run_burst(queue)
        stages = [(p["stage"], p["step"]) for p in seen]
        assert stages[0] == ("loading", 0)
        assert ("refine", 3) in stages

    def test_codec_error_fails_without_retry(self, queue, encoder):
        # a 32-bit float image: the codec's image policy refuses it
        buf = io.BytesIO()
        Image.new("F", (8, 8)).save(buf, "TIFF")
        job = enqueue(queue, {"preset": "fast"}, data=buf.getvalue())
        run_burst(queue)
        job.refresh()
        assert job.get_status() == JobStatus.FAILED
        assert job.meta["error"]["type"] == "unsupported-image-mode"
        assert job.meta["attempts"] == 1
        assert protocol.job_state(job.get_status()) is JobState.FAILED

    def test_missing_upload_fails_with_input_missing(self, queue, encoder):
        job = enqueue(queue)
        queue.connection.delete(job.args[0])
        run_burst(queue)
        job.refresh()
        assert job.get_status() == JobStatus.FAILED
        assert job.meta["error"]["type"] == "input-missing"

    def test_cancel_flag_stops_a_running_job(self, queue, encoder):
        job = enqueue(queue)
        queue.connection.set(protocol.cancel_key(job.id), b"1")
        run_burst(queue)
        job.refresh()
        assert job.get_status() == JobStatus.FAILED
        assert job.meta["error"]["type"] == "canceled"
        assert protocol.job_state(job.get_status(), cancel_requested=True) is JobState.CANCELED


class TestEncodeWorker:
    def test_heartbeat_ttl_is_interval_plus_grace(self, queue):
        worker = EncodeWorker([queue], connection=queue.connection, serializer="json",
                              job_monitoring_interval=3, heartbeat_grace=4)
        assert worker.get_heartbeat_ttl(None) == 7

    def test_heartbeat_keeps_long_job_registered(self, queue, encoder, monkeypatch):
        """A job longer than interval + grace stays in the StartedJobRegistry (not abandoned)."""
        monkeypatch.setenv("FAKE_STEP_SECONDS", "0.5")
        job = enqueue(queue, {"preset": "fast", "refine_steps": 8})  # ~4 s > 1 + 2 s
        registry = StartedJobRegistry(queue=queue)
        alive = []

        def probe():
            time.sleep(3.5)
            registry.cleanup()
            alive.append(job.id in registry.get_job_ids(cleanup=False))

        import threading

        thread = threading.Thread(target=probe)
        thread.start()
        run_burst(queue)
        thread.join()
        assert alive == [True]
        job.refresh()
        assert job.get_status() == JobStatus.FINISHED
        assert job.meta["attempts"] == 1

    def test_abandoned_job_is_requeued_with_a_retry(self, queue, encoder):
        """What happens when a worker dies: its registry entry expires and cleanup requeues the job."""
        job = enqueue(queue, retries=2)
        worker = EncodeWorker([queue], connection=queue.connection, serializer="json",
                              job_monitoring_interval=1, heartbeat_grace=1)
        dequeued, _ = queue.dequeue_any([queue], None, connection=queue.connection, serializer=queue.serializer)
        execution = worker.prepare_execution(dequeued)
        worker.prepare_job_execution(dequeued)
        assert job.get_status() == JobStatus.STARTED
        # ...and the worker is SIGKILLed here: no more heartbeats.
        time.sleep(2.2)
        StartedJobRegistry(queue=queue).cleanup()
        job.refresh()
        assert job.get_status() == JobStatus.QUEUED
        assert job.retries_left == 1
        run_burst(queue)
        job.refresh()
        assert job.get_status() == JobStatus.FINISHED
        assert job.meta["attempts"] == 1  # the dead attempt never got to run the job code
        assert execution.job_id == job.id


class TestLimits:
    """The worker applies the API's limits: it reads the same variables."""

    @pytest.fixture
    def limited(self, monkeypatch, fake_codec):
        monkeypatch.setenv("METALIC_MAX_PIXELS", "4096")
        monkeypatch.setenv("METALIC_ENCODER_FACTORY", "fake_codec:Encoder")
        monkeypatch.setattr(jobs, "_encoder", None)
        jobs._settings.cache_clear()
        yield
        jobs._settings.cache_clear()

    def test_the_encoder_gets_the_pixel_limit_the_api_reads(self, limited):
        from service.config import Settings

        assert jobs.get_encoder().max_pixels == Settings(api_keys=["k"]).max_pixels == 4096

    @pytest.mark.parametrize("size, state", [((64, 64), JobStatus.FINISHED), ((65, 64), JobStatus.FAILED)])
    def test_an_image_over_the_limit_fails_as_too_large(self, limited, queue, size, state):
        job = enqueue(queue, data=png(*size))
        run_burst(queue)
        job.refresh()
        assert job.get_status() == state
        if state == JobStatus.FAILED:
            assert job.meta["error"]["type"] == "image-too-large"
