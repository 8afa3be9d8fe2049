"""``POST /compare``: baselines at the metalic file's byte count."""

from __future__ import annotations

import base64
import io

import numpy as np
from api_helpers import assert_problem, auth
from PIL import Image

from codec import baselines


def png(width: int = 64, height: int = 48) -> bytes:
    rng = np.random.RandomState(1)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 4, y * 5, (x + y) * 2], -1) + rng.normal(0, 6, (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def post(client, data: bytes | None = None, headers: dict | None = None, **form):
    form.setdefault("budget", "1500")
    return client.post("/compare", files={"file": ("image.png", data if data is not None else png(), "image/png")},
                       data=form, headers=auth() if headers is None else headers)


def test_every_baseline_fits_the_budget_and_is_that_format(client):
    response = post(client)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"], body["budget"]) == (64, 48, 1500)
    assert [b["codec"] for b in body["baselines"]] == baselines.available()
    for b in body["baselines"]:
        data = base64.b64decode(b["data"])
        assert b["fits"] and len(data) == b["bytes"] <= 1500
        assert b["bpp"] == b["bytes"] * 8 / (64 * 48)
        assert Image.open(io.BytesIO(data)).format == baselines.CODECS[b["codec"]].pil_format
    original = Image.open(io.BytesIO(base64.b64decode(body["original"])))
    assert (original.format, original.size) == ("PNG", (64, 48))


def test_original_is_the_image_the_encoder_sees(client):
    # Alpha is composited on white by the codec's image policy; the page must compare against that.
    im = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    buffer = io.BytesIO()
    im.save(buffer, format="PNG")
    body = post(client, buffer.getvalue()).json()
    original = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["original"]))).convert("RGB"))
    assert (original == 255).all()


def test_a_codec_subset(client):
    body = post(client, codecs="webp").json()
    assert [b["codec"] for b in body["baselines"]] == ["webp"]


def test_needs_an_api_key(client):
    assert_problem(post(client, headers={}), 401, "missing-api-key")


def test_not_an_image_is_415(client):
    assert_problem(post(client, b"hello, this is text"), 415, "unsupported-media-type")


def test_a_broken_image_is_422(client):
    assert_problem(post(client, b"\x89PNG\r\n\x1a\n" + b"\x00" * 40), 422, "invalid-image")


def test_budget_and_codecs_are_validated(client):
    assert_problem(post(client, budget="0"), 422, "validation-error")
    body = assert_problem(post(client, codecs="jpeg,gif"), 422, "invalid-options")
    assert "gif" in body["detail"]


def test_upload_over_the_limit_is_413(client, settings):
    assert_problem(post(client, b"\x89PNG\r\n\x1a\n" + b"\x00" * settings.max_upload_bytes), 413, "payload-too-large")


def test_compare_is_in_the_openapi_schema(client):
    assert "/compare" in client.get("/openapi.json").json()["paths"]
