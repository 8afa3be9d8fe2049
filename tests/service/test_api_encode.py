"""POST /encode: validation before enqueueing, idempotency, quota, problem+json."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from api_helpers import KEY_A, KEY_B, assert_problem, auth, image_bytes, submit
from PIL import Image
from rq import Queue

from worker import protocol

def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height but carries (almost) no pixel data: a bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda tag, body: struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


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


class TestImageModesComeFromTheCodec:
    """The API accepts what the codec's image policy accepts and refuses what it refuses."""

    def test_the_service_uses_the_codec_mode_set(self):
        from codec.image import SUPPORTED_MODES
        from service.codec_port import LibraryCodec

        assert LibraryCodec().supported_modes is SUPPORTED_MODES
        assert {"LAB", "HSV", "I;16", "CMYK"} <= SUPPORTED_MODES
        assert "I;16N" not in SUPPORTED_MODES and "F" not in SUPPORTED_MODES

    def test_lab_tiff_is_accepted(self, client):
        assert submit(client, image_bytes(fmt="TIFF", mode="LAB")).status_code == 202

    def test_float_tiff_is_refused_before_it_is_queued(self, client):
        assert_problem(submit(client, image_bytes(fmt="TIFF", mode="F")), 422, "unsupported-image-mode")

    @pytest.mark.parametrize("mode", ["HSV", "I;16N"])
    def test_the_codec_policy_agrees_with_the_set(self, mode):
        from codec.errors import ImageError
        from codec.image import SUPPORTED_MODES, prepare_image

        im = Image.new(mode, (4, 4))
        if mode in SUPPORTED_MODES:
            assert prepare_image(im).rgb.shape == (4, 4, 3)
        else:
            with pytest.raises(ImageError):
                prepare_image(im)
