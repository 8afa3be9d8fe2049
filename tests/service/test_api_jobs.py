"""GET/DELETE /jobs/{id}, the bitstream, and job visibility per key."""

from __future__ import annotations

import pytest
from api_helpers import assert_problem, KEY_B, auth, image_bytes, submit
from rq import Queue

from worker import jobs as worker_jobs
from worker import protocol
from worker.main import EncodeWorker


@pytest.fixture
def run_worker(redis_conn, fake_codec, monkeypatch):
    monkeypatch.setattr(worker_jobs, "_encoder", fake_codec.Encoder())

    def run():
        queue = Queue(protocol.DEFAULT_QUEUE, connection=redis_conn, serializer=protocol.SERIALIZER)
        EncodeWorker([queue], connection=redis_conn, serializer=protocol.SERIALIZER).work(
            burst=True, logging_level="WARNING")

    return run


class TestGetJob:
    def test_queued_job(self, client):
        job_id = submit(client).json()["id"]
        body = client.get(f"/jobs/{job_id}", headers=auth()).json()
        assert body["status"] == "queued" and body["result"] is None and body["error"] is None

    def test_succeeded_job_has_result_and_bitstream(self, client, run_worker, fake_codec):
        job_id = submit(client, image_bytes(40, 30)).json()["id"]
        run_worker()
        body = client.get(f"/jobs/{job_id}", headers=auth()).json()
        assert body["status"] == "succeeded", body
        assert body["result"]["metadata"]["width"] == 40
        assert body["links"]["bitstream"] == f"/jobs/{job_id}/bitstream"
        assert body["links"]["cancel"] is None
        assert body["attempts"] == 1
        response = client.get(f"/jobs/{job_id}/bitstream", headers=auth())
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/vnd.metalic.bitstream"
        digest = __import__("base64").b64encode(__import__("hashlib").sha256(response.content).digest()).decode()
        assert response.headers["repr-digest"] == f"sha-256=:{digest}:"
        assert response.headers["etag"] == f'"{body["result"]["sha256"]}"'
        assert len(response.content) == body["result"]["bytes"]
        assert fake_codec.decode(response.content).image.size == (40, 30)

    def test_failed_job_reports_error_type_and_detail(self, client, run_worker, redis_conn):
        job_id = submit(client).json()["id"]
        redis_conn.delete(protocol.upload_key(job_id))
        run_worker()
        body = client.get(f"/jobs/{job_id}", headers=auth()).json()
        assert body["status"] == "failed"
        assert body["error"]["type"] == "input-missing"
        assert body["error"]["detail"]

    def test_other_key_gets_404(self, client):
        job_id = submit(client).json()["id"]
        assert_problem(client.get(f"/jobs/{job_id}", headers=auth(KEY_B)), 404, "job-not-found")
        assert_problem(client.get(f"/jobs/{job_id}/bitstream", headers=auth(KEY_B)), 404, "job-not-found")
        assert_problem(client.delete(f"/jobs/{job_id}", headers=auth(KEY_B)), 404, "job-not-found")

    @pytest.mark.parametrize("job_id", ["0" * 32, "nope", "../../etc", "rq:job:x", "A" * 64])
    def test_unknown_or_malformed_ids_are_404(self, client, job_id):
        assert client.get(f"/jobs/{job_id}", headers=auth()).status_code == 404

    def test_bitstream_of_unfinished_job_is_409(self, client):
        job_id = submit(client).json()["id"]
        assert_problem(client.get(f"/jobs/{job_id}/bitstream", headers=auth()), 409, "job-not-succeeded")

    def test_expired_bitstream_is_410(self, client, run_worker, redis_conn):
        job_id = submit(client).json()["id"]
        run_worker()
        redis_conn.delete(protocol.bitstream_key(job_id))
        assert_problem(client.get(f"/jobs/{job_id}/bitstream", headers=auth()), 410, "bitstream-expired")


class TestCancel:
    def test_cancel_queued_job(self, client, redis_conn, run_worker):
        job_id = submit(client).json()["id"]
        response = client.delete(f"/jobs/{job_id}", headers=auth())
        assert response.status_code == 202
        assert response.json()["status"] == "canceled"
        assert Queue(protocol.DEFAULT_QUEUE, connection=redis_conn).count == 0
        assert redis_conn.get(protocol.upload_key(job_id)) is None
        run_worker()
        assert client.get(f"/jobs/{job_id}", headers=auth()).json()["status"] == "canceled"

    def test_cancel_while_the_job_runs_stops_it_at_its_next_step(self, client, redis_conn, fake_codec, monkeypatch):
        import threading
        import time

        monkeypatch.setattr(worker_jobs, "_encoder", fake_codec.Encoder())
        monkeypatch.setenv("FAKE_STEP_SECONDS", "0.2")
        job_id = submit(client, refine_steps="50").json()["id"]  # about 10 s of steps
        queue = Queue(protocol.DEFAULT_QUEUE, connection=redis_conn, serializer=protocol.SERIALIZER)
        seen = {}

        def cancel_when_running():
            deadline = time.monotonic() + 20
            while (body := client.get(f"/jobs/{job_id}", headers=auth()).json())["status"] != "running" \
                    or not (body["progress"] or {}).get("step"):
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)
            seen["asked"] = time.monotonic()
            seen["response"] = client.delete(f"/jobs/{job_id}", headers=auth())

        canceller = threading.Thread(target=cancel_when_running)
        canceller.start()
        # The worker runs in the main thread, as `metalic worker` does (signals, the watchdog's pulse).
        EncodeWorker([queue], connection=redis_conn, serializer=protocol.SERIALIZER).work(
            burst=True, logging_level="WARNING")
        ended = time.monotonic()
        canceller.join()
        assert seen["response"].status_code == 202 and seen["response"].json()["status"] == "running"
        assert ended - seen["asked"] < 2  # stopped at its next step, not at the end
        body = client.get(f"/jobs/{job_id}", headers=auth()).json()
        assert body["status"] == "canceled" and body["error"]["type"] == "canceled"
        assert redis_conn.get(protocol.upload_key(job_id)) is None
        assert redis_conn.get(protocol.bitstream_key(job_id)) is None
        assert_problem(client.get(f"/jobs/{job_id}/bitstream", headers=auth()), 409, "job-not-succeeded")

    def test_cancel_finished_job_is_409(self, client, run_worker):
        job_id = submit(client).json()["id"]
        run_worker()
        assert_problem(client.delete(f"/jobs/{job_id}", headers=auth()), 409, "job-finished")

    def test_cancel_twice_is_409(self, client):
        job_id = submit(client).json()["id"]
        client.delete(f"/jobs/{job_id}", headers=auth())
        assert_problem(client.delete(f"/jobs/{job_id}", headers=auth()), 409, "job-finished")


class TestProblemsEverywhere:
    def test_unknown_route_is_problem_404(self, client):
        assert_problem(client.get("/nope"), 404, "not-found")

    def test_wrong_method_is_problem_405(self, client):
        assert_problem(client.put("/encode"), 405, "method-not-allowed")

    @pytest.mark.parametrize("path, allow", [("/jobs/" + "0" * 32, "DELETE, GET"), ("/encode", "POST"),
                                             ("/jobs/" + "0" * 32 + "/bitstream", "GET")])
    def test_405_allow_names_every_method_of_the_path(self, client, path, allow):
        # GET and DELETE on /jobs/{id} are two routes; Starlette's own 405 named the first one's only
        response = client.request("OPTIONS", path, headers=auth())
        assert_problem(response, 405, "method-not-allowed")
        assert response.headers["allow"] == allow

    def test_redis_down_is_503_with_retry_after(self, settings, fake_codec):
        from fastapi.testclient import TestClient

        from service.main import create_app

        down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
        with TestClient(create_app(down, codec=fake_codec.FakeCodec()), raise_server_exceptions=False) as c:
            response = c.get("/jobs/" + "0" * 32, headers=auth())
            assert_problem(response, 503, "backend-unavailable")
            assert response.headers["retry-after"] == "7"
            assert c.get("/readyz").status_code == 503
            assert c.get("/healthz").status_code == 200

    def test_a_full_redis_is_503_with_retry_after_not_a_500(self, settings, fake_codec, tmp_path):
        import redis
        from fastapi.testclient import TestClient

        from service.main import create_app
        from service.redis_server import EmbeddedRedis

        with EmbeddedRedis(tmp_path / "full", appendonly=False, maxmemory="3mb") as server:
            filler = redis.Redis.from_url(server.url)
            try:
                for i in range(400):
                    filler.set(f"filler:{i}", b"x" * 32 * 1024)
            except redis.OutOfMemoryError:
                pass
            full = settings.model_copy(update={"redis_url": server.url})
            with TestClient(create_app(full, codec=fake_codec.FakeCodec()), raise_server_exceptions=False) as c:
                response = submit(c, image_bytes(64, 64))
                assert_problem(response, 503, "backend-full")
                assert response.headers["retry-after"] == "7"
            assert filler.keys("rq:job:*") == [] and filler.keys("metalic:upload:*") == []  # nothing half-written


def test_the_api_reaps_a_dead_workers_job_when_no_worker_is_left(settings, fake_codec, redis_conn):
    """The API process runs a reaper too: nothing waits for a worker to come back to notice the loss."""
    import time

    from fastapi.testclient import TestClient

    from service.main import create_app
    from tests.worker.test_reaper import start_and_die

    fast = settings.model_copy(update={"reap_interval": 0.2})
    with TestClient(create_app(fast, codec=fake_codec.FakeCodec()), raise_server_exceptions=False) as c:
        job_id = submit(c).json()["id"]
        queue = Queue(protocol.DEFAULT_QUEUE, connection=redis_conn, serializer=protocol.SERIALIZER,
                      job_class=worker_jobs.EncodeJob)
        start_and_die(queue, queue.fetch_job(job_id))
        assert c.get(f"/jobs/{job_id}", headers=auth()).json()["status"] == "running"
        redis_conn.delete(protocol.lease_key(job_id))  # its lease ran out
        deadline = time.monotonic() + 5
        while c.get(f"/jobs/{job_id}", headers=auth()).json()["status"] != "queued":
            assert time.monotonic() < deadline
            time.sleep(0.05)
