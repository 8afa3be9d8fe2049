"""worker.jobs.encode_image and EncodeWorker's outcomes, on the private Redis with the fake encoder."""

from __future__ import annotations

import hashlib
import io
import logging

import pytest
import redis
from PIL import Image
from rq.job import JobStatus

from tests.worker.worker_helpers import Exits, enqueue, make_queue, outcome, run_burst
from worker import jobs, protocol
from worker.protocol import JobState


@pytest.fixture
def encoder(fake_codec, monkeypatch):
    monkeypatch.setattr(jobs, "_encoder", fake_codec.Encoder())
    return jobs._encoder


@pytest.fixture
def queue(redis_conn):
    return make_queue(redis_conn)


class Flaky:
    """An encoder that raises ``errors`` in turn, then encodes with the fake codec."""

    def __init__(self, inner, *errors):
        self.inner, self.errors, self.calls = inner, list(errors), 0

    def encode(self, image, options, progress=None):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.inner.encode(image, options, progress)


def assert_cleaned_up(queue, job):
    """Every terminal state leaves no upload and no lease behind."""
    assert queue.connection.get(protocol.upload_key(job.id)) is None
    assert queue.connection.get(protocol.lease_key(job.id)) is None


class TestEncodeImage:
    def test_success_commits_one_outcome_with_the_bitstream_it_describes(self, queue, encoder, fake_codec):
        job = enqueue(queue)
        run_burst(queue)
        job.refresh()
        assert job.get_status() == JobStatus.FINISHED
        record = outcome(queue, job.id)
        assert record.state is JobState.SUCCEEDED and record.attempts == 1
        bitstream = queue.connection.get(protocol.bitstream_key(job.id))
        assert record.result["sha256"] == hashlib.sha256(bitstream).hexdigest()
        assert record.result["bytes"] == len(bitstream)
        assert job.return_value()["sha256"] == record.result["sha256"]
        assert fake_codec.decode(bitstream).image.size == (24, 16)
        assert 0 < queue.connection.ttl(protocol.bitstream_key(job.id)) <= 3600
        assert 0 < queue.connection.ttl(protocol.outcome_key(job.id)) <= 3600
        assert_cleaned_up(queue, job)

    def test_progress_is_published_in_meta(self, queue, encoder, monkeypatch):
        seen = []
        original = jobs.ProgressPublisher.publish

        def spy(self, progress):
            seen.append(dict(progress))
            self.min_interval = 0.0
            original(self, progress)

        monkeypatch.setattr(jobs.ProgressPublisher, "publish", spy)
        enqueue(queue, {"preset": "fast", "refine_steps": 3})
        run_burst(queue)
        stages = [(p["stage"], p["step"]) for p in seen]
        assert stages[0] == ("loading", 0)
        assert ("refine", 3) in stages

    def test_codec_error_fails_at_once_with_its_type(self, queue, encoder):
        buf = io.BytesIO()
        Image.new("F", (8, 8)).save(buf, "TIFF")  # a 32-bit float image: the image policy refuses it
        job = enqueue(queue, data=buf.getvalue())
        run_burst(queue)
        job.refresh()
        record = outcome(queue, job.id)
        assert record.state is JobState.FAILED and record.error["type"] == "unsupported-image-mode"
        assert record.attempts == 1
        assert job.get_status() == JobStatus.FAILED
        assert_cleaned_up(queue, job)

    def test_missing_upload_fails_with_input_missing(self, queue, encoder):
        job = enqueue(queue)
        queue.connection.delete(job.args[0])
        run_burst(queue)
        assert outcome(queue, job.id).error["type"] == "input-missing"

    def test_cancel_flag_ends_the_job_canceled(self, queue, encoder):
        job = enqueue(queue)
        queue.connection.set(protocol.cancel_key(job.id), b"1")
        run_burst(queue)
        record = outcome(queue, job.id)
        assert record.state is JobState.CANCELED and record.error["type"] == "canceled"
        assert queue.connection.get(protocol.bitstream_key(job.id)) is None
        assert_cleaned_up(queue, job)

    def test_internal_error_text_goes_to_the_log_not_the_client(self, queue, encoder, monkeypatch, caplog):
        monkeypatch.setattr(jobs, "_encoder", Flaky(encoder, KeyError("/srv/secret/path.pt")))
        job = enqueue(queue)
        with caplog.at_level(logging.ERROR, logger="metalic.worker"):
            run_burst(queue)
        record = outcome(queue, job.id)
        assert record.error["type"] == "internal-error"
        assert "secret" not in record.error["detail"]
        assert "secret" in caplog.text and job.id in caplog.text
        assert jobs._encoder.calls == 1  # deterministic: not retried

    def test_job_timeout_fails_without_retry(self, queue, encoder, monkeypatch):
        monkeypatch.setenv("FAKE_STEP_SECONDS", "1.0")
        job = enqueue(queue, {"preset": "fast", "refine_steps": 10}, timeout=2)
        run_burst(queue)
        record = outcome(queue, job.id)
        assert record.error["type"] == "job-timeout" and record.attempts == 1
        job.refresh()
        assert job.retries_left == 0


class TestTransientErrors:
    @pytest.mark.parametrize("error", [redis.ConnectionError("blip"), MemoryError()], ids=["redis-blip", "host-oom"])
    def test_transient_error_is_retried_and_then_succeeds(self, queue, encoder, monkeypatch, error):
        monkeypatch.setattr(jobs, "_encoder", Flaky(encoder, error))
        job = enqueue(queue, retries=2)
        run_burst(queue)
        record = outcome(queue, job.id)
        assert record.state is JobState.SUCCEEDED and record.attempts == 2
        job.refresh()
        assert job.retries_left == 1
        assert jobs._encoder.calls == 2

    def test_cuda_out_of_memory_is_retried(self, queue, encoder, monkeypatch):
        torch = pytest.importorskip("torch")
        monkeypatch.setattr(jobs, "_encoder", Flaky(encoder, torch.cuda.OutOfMemoryError("CUDA out of memory.")))
        job = enqueue(queue, retries=1)
        run_burst(queue)
        assert outcome(queue, job.id).state is JobState.SUCCEEDED

    def test_transient_error_without_retries_left_fails_with_its_type(self, queue, encoder, monkeypatch):
        monkeypatch.setattr(jobs, "_encoder", Flaky(encoder, MemoryError(), MemoryError()))
        job = enqueue(queue, retries=1)
        run_burst(queue)
        record = outcome(queue, job.id)
        assert record.state is JobState.FAILED and record.error["type"] == "out-of-memory"
        assert record.attempts == 2
        assert_cleaned_up(queue, job)


class TestOnlyTheEncodeFunctionRuns:
    def test_a_job_naming_another_function_is_refused_unrun(self, queue, encoder, tmp_path):
        marker = tmp_path / "ran"
        job = queue.enqueue_call("os.system", args=(f"touch {marker}",), result_ttl=60, failure_ttl=60)
        run_burst(queue)
        job.refresh()
        assert job.get_status() == JobStatus.FAILED
        assert not marker.exists()

    def test_a_job_naming_a_callback_is_refused_unrun(self, queue, encoder):
        job = enqueue(queue)
        job._failure_callback_name = "os.abort"
        job.save()
        run_burst(queue)
        job.refresh()
        assert job.get_status() == JobStatus.FAILED
        assert outcome(queue, job.id) is None  # nothing of it ran

    def test_the_job_class_resolves_nothing_but_encode_image(self, queue):
        job = enqueue(queue)
        loaded = type(queue).fetch_job(queue, job.id)
        assert loaded.func is jobs.encode_image
        loaded._func_name = "subprocess.call"
        with pytest.raises(jobs.ForbiddenJobError):
            loaded.func
        assert loaded.success_callback is None and loaded.failure_callback is None


def test_exits_recorder_is_untouched_by_a_normal_job(queue, encoder):
    exits = Exits()
    enqueue(queue)
    run_burst(queue, exits)
    assert exits.codes == []
