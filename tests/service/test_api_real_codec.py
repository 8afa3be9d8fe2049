"""Bad input through the real codec (codec.image / codec.options / codec.pipeline): 4xx, never 500.

And what the API accepts, a worker with the real encoder finishes: a job accepted with 202 does
not fail for a reason that was known at submit time (a property over images and options).
"""

from __future__ import annotations

import json

import pytest
from api_helpers import assert_problem, auth, image_bytes, submit
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.support.images import png_header_only
from tests.support.properties import encode_options, examples, images

pytest.importorskip("codec.pipeline", reason="the real codec is not importable")


@pytest.fixture
def real_client(settings):
    from service.main import create_app

    with TestClient(create_app(settings.model_copy(update={"preload_model": ""})),
                    raise_server_exceptions=False) as client:
        yield client


_BIG = image_bytes(256, 256)


@pytest.mark.parametrize("data,status,code", [
    (_BIG[: len(_BIG) // 2], 422, "invalid-image"),
    (b"just some text, not an image" * 20, 415, "unsupported-media-type"),
    (png_header_only(20000, 20000), 413, "image-too-large"),
    (png_header_only(0, 0), 422, "invalid-image"),
    (b"", 422, "invalid-image"),
])
def test_bad_images(real_client, data, status, code):
    assert_problem(submit(real_client, data), status, code)


@pytest.mark.parametrize("form", [{"target_bpp": "1000"}, {"lmbda": "7"}, {"target_psnr": "3"},
                                  {"refine_steps": "-1"}, {"target_bpp": "0.5", "target_psnr": "30"}])
def test_absurd_targets(real_client, form):
    assert_problem(submit(real_client, **form), 422, "invalid-options")


def test_valid_upload_is_accepted_with_normalized_options(real_client):
    response = submit(real_client, image_bytes(64, 48), preset="fast")
    assert response.status_code == 202, response.text
    assert response.json()["options"]["preset"] == "fast"


@pytest.mark.parametrize("data", [b"", b"MLIC", b"MLIC\x01" + b"\x00" * 64, b"\xff" * 300, image_bytes()])
def test_malformed_or_foreign_bitstreams(real_client, data):
    response = real_client.post("/decode", files={"file": ("x.mlic", data)}, headers=auth())
    assert_problem(response, 422, "invalid-bitstream")


@pytest.mark.parametrize("max_pixels,reason", [(None, "has 4 bytes"), (512 * 512, "declares a 4096x4096 image")])
def test_the_crafted_57_byte_stream_of_issue_11_is_a_problem_not_a_crash(settings, max_pixels, reason):
    # once answered 200 with a 4096x4096 PNG made of other memory, or a crash of the API process
    from service.main import create_app
    from tests.support.crafted import StreamForge, issue_11_stream

    update = {"preload_model": ""} | ({} if max_pixels is None else {"max_pixels": max_pixels})
    if max_pixels is None:
        from codec.constants import DEFAULT_MAX_PIXELS

        update["max_pixels"] = DEFAULT_MAX_PIXELS
    with TestClient(create_app(settings.model_copy(update=update)), raise_server_exceptions=False) as client:
        response = client.post("/decode", files={"file": ("x.mlic", issue_11_stream(StreamForge()))}, headers=auth())
    body = assert_problem(response, 422, "invalid-bitstream")
    assert reason in body["detail"]


def test_truncated_real_bitstream(real_client):
    import io

    from codec.pipeline import Encoder

    bitstream = Encoder(device="cpu").encode(image_bytes(64, 64), {"preset": "fast"}).bitstream
    for cut in (len(bitstream) // 2, len(bitstream) - 1, 12):
        response = real_client.post("/decode", files={"file": ("x.mlic", bitstream[:cut])}, headers=auth())
        assert_problem(response, 422, "invalid-bitstream")
    flipped = bytearray(bitstream)
    flipped[len(flipped) // 2] ^= 0x55
    response = real_client.post("/decode", files={"file": ("x.mlic", bytes(flipped))}, headers=auth())
    assert_problem(response, 422, "invalid-bitstream")
    ok = real_client.post("/decode", files={"file": ("x.mlic", bitstream)}, headers=auth())
    assert ok.status_code == 200
    from PIL import Image

    assert Image.open(io.BytesIO(ok.content)).size == (64, 64)


@pytest.fixture
def real_worker(redis_conn, monkeypatch, settings):
    """An in-process worker with the real encoder, under the API's pixel limit."""
    from rq import Queue

    from codec.pipeline import Encoder
    from worker import jobs as worker_jobs
    from worker import protocol
    from worker.main import EncodeWorker

    monkeypatch.setattr(worker_jobs, "_encoder", Encoder(device="cpu", max_pixels=settings.max_pixels))

    def run():
        queue = Queue(protocol.DEFAULT_QUEUE, connection=redis_conn, serializer=protocol.SERIALIZER)
        EncodeWorker([queue], connection=redis_conn, serializer=protocol.SERIALIZER).work(
            burst=True, logging_level="WARNING")

    return run


@pytest.mark.parametrize("size", [(1, 1), (2, 3)])
def test_a_tiny_image_with_a_bpp_target_succeeds(real_client, real_worker, size):
    # accepted with 202, it used to fail in the worker with an internal error (math domain error)
    response = submit(real_client, image_bytes(*size), target_bpp="0.5", preset="balanced", refine_steps="6",
                      lambda_steps="2")
    assert response.status_code == 202, response.text
    real_worker()
    job = real_client.get(f"/jobs/{response.json()['id']}", headers=auth()).json()
    assert job["status"] == "succeeded", job["error"]
    meta = job["result"]["metadata"]
    assert (meta["width"], meta["height"]) == size
    assert meta["target_reached"] is False and any("out of reach" in w for w in meta["warnings"])
    assert meta["ms_ssim"] is None  # NaN on the worker, null in JSON
    bitstream = real_client.get(f"/jobs/{job['id']}/bitstream", headers=auth()).content
    decoded = real_client.post("/decode", files={"file": ("x.mlic", bitstream)}, headers=auth())
    assert decoded.status_code == 200


@pytest.mark.parametrize("data, form, status, code", [
    (image_bytes(fmt="TIFF", mode="F"), {}, 422, "unsupported-image-mode"),
    (image_bytes(), {"model": "bmshj2018-factorized"}, 422, "invalid-options"),
    (image_bytes(513, 512), {}, 413, "image-too-large"),
])
def test_what_a_worker_would_refuse_is_refused_at_submit(real_client, redis_conn, data, form, status, code):
    assert_problem(submit(real_client, data, **form), status, code)
    assert not redis_conn.keys("rq:job:*")


def _form(options: dict) -> dict[str, str]:
    """Options as the SDK sends them: JSON literals."""
    return {k: json.dumps(v) if not isinstance(v, str) else v for k, v in options.items()}


@given(image=images(max_side=24, files_only=True), options=encode_options(),
       cut=st.one_of(st.none(), st.integers(8, 400)))
@settings(max_examples=examples(12), suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                             HealthCheck.data_too_large])
def test_a_job_accepted_with_202_does_not_fail(roomy_client, real_worker, image, options, cut):
    # what can be known at submit time is answered at submit time: a 202 job ends succeeded
    data = image[0] if cut is None else image[0][:cut]  # a cut file: a truncated upload
    response = roomy_client.post("/encode", files={"file": ("image", data)}, data=_form(options), headers=auth())
    event(f"answer {response.status_code}")
    if response.status_code != 202:
        assert response.status_code in (413, 415, 422), response.text
        return
    real_worker()
    job = roomy_client.get(f"/jobs/{response.json()['id']}", headers=auth()).json()
    assert job["status"] == "succeeded", job["error"]


@pytest.fixture
def roomy_client(settings):
    """The real codec, and more jobs in flight than the cases submit."""
    from service.main import create_app

    roomy = settings.model_copy(update={"preload_model": "", "max_jobs_in_flight": 10_000})
    with TestClient(create_app(roomy), raise_server_exceptions=False) as client:
        yield client
