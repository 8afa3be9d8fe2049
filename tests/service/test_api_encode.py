"""POST /encode: validation before enqueueing, idempotency, quota, problem+json."""

from __future__ import annotations

import pytest
from api_helpers import KEY_A, KEY_B, assert_problem, auth, image_bytes, submit
from rq import Queue

from codec.image import SUPPORTED_MODES
from tests.support.images import FILE_FORMATS, file_bytes, image_in_mode, png_header_only
from worker import protocol


class TestEncodeAccepted:
    def test_answers_202_with_location_and_links(self, client, redis_conn):
        response = submit(client)
        assert response.status_code == 202, response.text
        job = response.json()
        assert response.headers["location"] == f"/jobs/{job['id']}"
        assert protocol.JOB_ID_RE.fullmatch(job["id"])
        assert job["status"] == "queued"
        assert job["links"] == {"self": f"/jobs/{job['id']}", "bitstream": None, "cancel": f"/jobs/{job['id']}"}
        assert job["input"]["width"] == 32 and job["input"]["format"] == "PNG"
        assert job["options"]["target_bpp"] == 0.5

    def test_job_is_enqueued_with_json_serializer_and_upload_stored(self, client, redis_conn):
        data = image_bytes()
        job_id = submit(client, data).json()["id"]
        queue = Queue(protocol.DEFAULT_QUEUE, connection=redis_conn, serializer="json")
        assert queue.job_ids == [job_id]
        job = queue.fetch_job(job_id)
        assert job.func_name == protocol.JOB_FUNCTION
        assert job.args[0] == protocol.upload_key(job_id)
        assert redis_conn.get(protocol.upload_key(job_id)) == data
        assert job.retries_left == 2 and job.timeout == 1800
        # JSON on the wire, never pickle.
        raw = redis_conn.hget(job.key, "data")
        assert not raw.startswith(b"\x80")

    def test_job_ids_are_unique(self, client):
        ids = {submit(client).json()["id"] for _ in range(3)}
        assert len(ids) == 3


class TestEncodeRejected:
    def test_truncated_png_is_422(self, client):
        data = image_bytes(64, 64)
        assert_problem(submit(client, data[: len(data) // 2]), 422, "invalid-image")

    def test_non_image_is_415(self, client):
        assert_problem(submit(client, b"%PDF-1.7 this is not an image" * 10), 415, "unsupported-media-type")

    def test_empty_upload_is_422(self, client):
        assert_problem(submit(client, b""), 422, "invalid-image")

    def test_gif_is_415(self, client):
        assert_problem(submit(client, image_bytes(fmt="GIF", mode="P")), 415, "unsupported-media-type")

    def test_decompression_bomb_is_413_before_decoding(self, client):
        assert_problem(submit(client, png_header_only(20000, 20000)), 413, "image-too-large")

    def test_zero_size_image_is_422(self, client):
        assert_problem(submit(client, png_header_only(0, 0)), 422, "invalid-image")

    def test_upload_over_byte_limit_is_413(self, client, settings):
        data = image_bytes() + b"\x00" * (settings.max_upload_bytes + 1)
        assert_problem(submit(client, data), 413, "payload-too-large")

    @pytest.mark.parametrize("form", [
        {"target_bpp": "1000"}, {"target_bpp": "-1"}, {"target_bpp": "0"}, {"lmbda": "5"},
        {"target_psnr": "500"}, {"refine_steps": "99999999"},
        {"target_bpp": "0.5", "lmbda": "0.01"},
    ])
    def test_absurd_targets_are_422(self, client, form):
        assert_problem(submit(client, **form), 422, "invalid-options")

    @pytest.mark.parametrize("form", [{"target_bpp": "nan"}, {"target_bpp": "inf"}, {"target_bpp": "abc"},
                                      {"preset": "ultra"}])
    def test_malformed_fields_are_422_validation_errors(self, client, form):
        body = assert_problem(submit(client, **form), 422, "validation-error")
        assert body["errors"]

    def test_missing_file_is_422(self, client):
        response = client.post("/encode", data={"target_bpp": "0.5"}, headers=auth())
        assert_problem(response, 422, "validation-error")

    @pytest.mark.parametrize("model", ["bmshj2018-hyperprior", "no-such-model", "METALIC-VR"])
    def test_a_model_the_workers_do_not_encode_with_is_422_at_submit(self, client, model):
        body = assert_problem(submit(client, model=model), 422, "invalid-options")
        assert "metalic-vr" in body["detail"]

    def test_the_job_names_the_workers_model(self, client, settings):
        assert submit(client).json()["options"]["model"] == settings.model
        assert submit(client, model=settings.model).status_code == 202
        # an empty field is a field left out, as an HTML form sends an empty input
        assert submit(client, model="").json()["options"]["model"] == settings.model

    def test_the_workers_model_comes_from_their_setting(self, settings, fake_codec, redis_url):
        from fastapi.testclient import TestClient

        from service.main import create_app

        zoo = settings.model_copy(update={"model": "bmshj2018-hyperprior"})
        with TestClient(create_app(zoo, codec=fake_codec.FakeCodec()), raise_server_exceptions=False) as c:
            assert submit(c).json()["options"]["model"] == "bmshj2018-hyperprior"
            assert_problem(submit(c, model="metalic-vr"), 422, "invalid-options")

    def test_nothing_is_stored_or_enqueued_on_rejection(self, client, redis_conn):
        submit(client, b"not an image at all")
        assert [k for k in redis_conn.keys("metalic:*")
                if not k.startswith((b"metalic:inflight", b"metalic:rate"))] == []  # (quota and rate counters)
        assert Queue(protocol.DEFAULT_QUEUE, connection=redis_conn).count == 0


class TestAuth:
    def test_missing_key_is_401(self, client):
        files = {"file": ("a.png", image_bytes(), "image/png")}
        response = client.post("/encode", files=files)
        assert_problem(response, 401, "missing-api-key")
        assert response.headers["www-authenticate"].startswith("Bearer")

    def test_wrong_key_is_401(self, client):
        assert_problem(submit(client, key="not-a-key"), 401, "invalid-api-key")

    def test_every_configured_key_works(self, client):
        assert submit(client, key=KEY_A).status_code == 202
        assert submit(client, key=KEY_B).status_code == 202

    def test_basic_auth_is_401(self, client):
        response = client.get("/jobs/" + "0" * 32, headers={"Authorization": "Basic Zm9vOmJhcg=="})
        assert_problem(response, 401, "missing-api-key")


class TestIdempotency:
    def test_same_key_same_payload_returns_same_job(self, client, redis_conn):
        data = image_bytes()
        first = submit(client, data, headers={"Idempotency-Key": "abc"})
        second = submit(client, data, headers={"Idempotency-Key": "abc"})
        assert first.status_code == second.status_code == 202
        assert first.json()["id"] == second.json()["id"]
        assert second.headers["idempotent-replayed"] == "true"
        assert Queue(protocol.DEFAULT_QUEUE, connection=redis_conn).count == 1

    def test_same_key_different_payload_is_422(self, client):
        assert submit(client, headers={"Idempotency-Key": "k1"}, target_bpp="0.5").status_code == 202
        response = submit(client, headers={"Idempotency-Key": "k1"}, target_bpp="0.25")
        assert_problem(response, 422, "idempotency-key-reused")

    def test_keys_are_scoped_per_api_key(self, client):
        first = submit(client, key=KEY_A, headers={"Idempotency-Key": "shared"})
        second = submit(client, key=KEY_B, headers={"Idempotency-Key": "shared"})
        assert first.json()["id"] != second.json()["id"]

    def test_a_rejected_request_does_not_burn_the_key(self, client):
        assert submit(client, b"garbage", headers={"Idempotency-Key": "k2"}).status_code == 415
        assert submit(client, headers={"Idempotency-Key": "k2"}).status_code == 202


class TestQuota:
    def test_jobs_in_flight_over_limit_is_429_with_retry_after(self, client):
        for _ in range(3):
            assert submit(client).status_code == 202
        response = submit(client)
        assert_problem(response, 429, "too-many-jobs")
        assert response.headers["retry-after"] == "7"

    def test_quota_is_per_key(self, client):
        for _ in range(3):
            submit(client, key=KEY_A)
        assert submit(client, key=KEY_B).status_code == 202

    def test_canceled_jobs_free_their_slot(self, client):
        ids = [submit(client).json()["id"] for _ in range(3)]
        assert client.delete(f"/jobs/{ids[0]}", headers=auth()).status_code == 202
        assert submit(client).status_code == 202

    def test_replay_does_not_count(self, client):
        for _ in range(3):
            assert submit(client, headers={"Idempotency-Key": "same"}).status_code == 202

    def test_concurrent_submits_never_exceed_the_quota(self, app, settings):
        from concurrent.futures import ThreadPoolExecutor

        from fastapi.testclient import TestClient

        with TestClient(app, raise_server_exceptions=False) as c:
            with ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(lambda _: submit(c).status_code, range(8)))
        assert codes.count(202) == settings.max_jobs_in_flight
        assert codes.count(429) == 8 - settings.max_jobs_in_flight


POLICY_AND_REFUSED_MODES = sorted(SUPPORTED_MODES | {"F", "I;16N"})


def _mode_files():
    cases = []
    for mode in POLICY_AND_REFUSED_MODES:
        for fmt in FILE_FORMATS:
            if file_bytes(image_in_mode(6, 4, mode), fmt) is not None:
                cases.append((mode, fmt))
    return cases


class TestImageModesComeFromTheCodec:
    """The API accepts what the codec's image policy accepts and refuses what it refuses, with its code."""

    @pytest.mark.parametrize("mode,fmt", _mode_files())
    def test_the_api_answers_as_the_codec_policy(self, client, mode, fmt):
        from codec.errors import ImageError
        from codec.image import probe_image
        from service.errors import codec_status

        data = file_bytes(image_in_mode(6, 4, mode, seed=1), fmt)
        try:
            probe_image(data)
        except ImageError as e:
            assert_problem(submit(client, data), codec_status(e), e.type)
        else:
            assert submit(client, data).status_code == 202

    def test_lab_tiff_is_accepted(self, client):
        assert submit(client, image_bytes(fmt="TIFF", mode="LAB")).status_code == 202

    def test_float_tiff_is_refused_before_it_is_queued(self, client, redis_conn):
        assert_problem(submit(client, image_bytes(fmt="TIFF", mode="F")), 422, "unsupported-image-mode")
        assert Queue(protocol.DEFAULT_QUEUE, connection=redis_conn).count == 0

    @pytest.mark.parametrize("mode", POLICY_AND_REFUSED_MODES)
    def test_every_mode_of_the_set_passes_the_policy(self, mode):
        from codec.errors import UnsupportedImageModeError
        from codec.image import prepare_image

        im = image_in_mode(4, 4, mode)
        if mode in SUPPORTED_MODES:
            assert prepare_image(im).rgb.shape == (4, 4, 3)
        else:
            with pytest.raises(UnsupportedImageModeError):
                prepare_image(im)


class TestBoundedValidation:
    """The upload check (a full decode and the image policy) runs in bounded slots off the event loop."""

    def test_past_the_wait_queue_it_is_503_with_retry_after(self, settings, fake_codec, redis_url):
        import threading
        from concurrent.futures import ThreadPoolExecutor

        from fastapi.testclient import TestClient

        from service.main import create_app

        entered, release = threading.Event(), threading.Event()

        class SlowProbe(fake_codec.FakeCodec):
            def probe_image(self, data, max_pixels):
                entered.set()
                release.wait(10)
                return super().probe_image(data, max_pixels)

        one_slot = settings.model_copy(update={"probe_concurrency": 1, "probe_queue": 0})
        with TestClient(create_app(one_slot, codec=SlowProbe()), raise_server_exceptions=False) as c:
            with ThreadPoolExecutor(1) as pool:
                first = pool.submit(submit, c)
                assert entered.wait(10)
                busy = submit(c)
                # other routes still answer while the only check slot is taken
                assert c.get("/healthz").status_code == 200
                release.set()
                assert first.result().status_code == 202
        assert_problem(busy, 503, "probe-busy")
        assert busy.headers["retry-after"] == "7"

    def test_bad_options_cost_no_decode(self, settings, fake_codec, redis_url):
        from fastapi.testclient import TestClient

        from service.main import create_app

        probed = []

        class CountingProbe(fake_codec.FakeCodec):
            def probe_image(self, data, max_pixels):
                probed.append(len(data))
                return super().probe_image(data, max_pixels)

        with TestClient(create_app(settings, codec=CountingProbe()), raise_server_exceptions=False) as c:
            assert_problem(submit(c, refine_steps="-1"), 422, "invalid-options")
            assert probed == []
            assert submit(c).status_code == 202 and len(probed) == 1
