"""service.jobs.JobService on the private Redis: submission is all or nothing, even when the API dies mid-way."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from api_helpers import image_bytes
from rq import Queue

from service.config import Settings
from service.jobs import JobService, fingerprint
from worker import protocol

ROOT = Path(__file__).resolve().parents[2]
OWNER = "o" * 32


@pytest.fixture
def service(redis_conn, redis_url):
    return JobService(redis_conn, Settings(redis_url=redis_url, api_keys=["k"]))


def metalic_keys(connection) -> list[bytes]:
    return sorted(k for k in connection.keys("*") if not k.startswith(b"metalic:inflight:"))


CRASH = textwrap.dedent('''
    import os, sys
    import redis
    from rq import Queue
    from service.config import Settings
    from service.jobs import JobService

    real = Queue.enqueue_call

    def enqueue_then_die(self, *args, **kwargs):
        job = real(self, *args, **kwargs)  # queued on the MULTI, not yet executed...
        os._exit(17)                        # ...and the API process dies before EXEC

    Queue.enqueue_call = enqueue_then_die
    service = JobService(redis.Redis.from_url(sys.argv[1]), Settings(redis_url=sys.argv[1], api_keys=["k"]))
    service.submit("o" * 32, open(sys.argv[2], "rb").read(), {}, {"preset": "fast"}, idempotency_key="retry-me")
''')


class TestSubmit:
    def test_an_api_killed_between_the_idempotency_record_and_the_enqueue_leaves_nothing(self, service, redis_conn,
                                                                                        redis_url, tmp_path):
        image = tmp_path / "in.png"
        image.write_bytes(image_bytes())
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        crashed = subprocess.run([sys.executable, "-c", CRASH, redis_url, str(image)], env=env, timeout=60)
        assert crashed.returncode == 17
        assert metalic_keys(redis_conn) == []  # no idempotency record, no upload, no job: the MULTI died with it
        # The client's retry with the same key is a new submission, not a 409 for 24 hours.
        job, replayed = service.submit(OWNER, image.read_bytes(), {}, {"preset": "fast"}, idempotency_key="retry-me")
        assert not replayed
        assert Queue(service.settings.queue, connection=redis_conn).job_ids == [job.id]

    def test_a_submission_writes_record_upload_and_job_together(self, service, redis_conn):
        data = image_bytes()
        job, _ = service.submit(OWNER, data, {}, {"preset": "fast"}, idempotency_key="k")
        record = redis_conn.get(protocol.idempotency_key(OWNER, __import__("hashlib").sha256(b"k").hexdigest()))
        assert record and job.id.encode() in record
        assert redis_conn.get(protocol.upload_key(job.id)) == data
        assert 0 < redis_conn.ttl(protocol.upload_key(job.id)) <= service.settings.upload_ttl
        replay, replayed = service.submit(OWNER, data, {}, {"preset": "fast"}, idempotency_key="k")
        assert replayed and replay.id == job.id

    def test_a_failed_enqueue_frees_the_quota_slot(self, service, redis_conn, monkeypatch):
        def broken(*args, **kwargs):
            raise RuntimeError("boom")

        monkeypatch.setattr(Queue, "enqueue_call", broken)
        with pytest.raises(RuntimeError):
            service.submit(OWNER, image_bytes(), {}, {"preset": "fast"}, idempotency_key="k")
        assert redis_conn.zcard(protocol.inflight_key(OWNER)) == 0
        assert metalic_keys(redis_conn) == []

    def test_fingerprint_binds_payload_and_options(self):
        assert fingerprint(b"a", {"x": 1}) != fingerprint(b"a", {"x": 2}) != fingerprint(b"b", {"x": 2})
        assert fingerprint(b"a", {"x": 1, "y": 2}) == fingerprint(b"a", {"y": 2, "x": 1})
