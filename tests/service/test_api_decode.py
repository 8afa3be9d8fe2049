"""POST /decode: bitstream in, PNG out; malformed or foreign streams are 422."""

from __future__ import annotations

import io

import pytest
from api_helpers import assert_problem, auth, image_bytes
from PIL import Image


def post_decode(client, data: bytes, key_headers=None):
    return client.post("/decode", files={"file": ("x.mlic", data, "application/octet-stream")},
                       headers=auth() if key_headers is None else key_headers)


def fake_bitstream(fake_codec, width=20, height=10) -> bytes:
    return fake_codec.Encoder().encode(image_bytes(width, height), {"refine_steps": 1}).bitstream


def test_decode_returns_png(client, fake_codec):
    response = post_decode(client, fake_bitstream(fake_codec))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (20, 10)
    assert response.headers["x-metalic-width"] == "20"


@pytest.mark.parametrize("mangle", [
    lambda b: b[: len(b) // 2],  # truncated
    lambda b: b[:4],  # header cut
    lambda b: b"",  # empty
    lambda b: b[:-3] + bytes(x ^ 0xFF for x in b[-3:]),  # checksum mismatch
    lambda b: image_bytes(),  # foreign: a PNG
    lambda b: b"\x00" * 4096,
])
def test_malformed_or_foreign_bitstream_is_422(client, fake_codec, mangle):
    assert_problem(post_decode(client, mangle(fake_bitstream(fake_codec))), 422, "invalid-bitstream")


def test_oversized_bitstream_is_413(client, settings):
    assert_problem(post_decode(client, b"\x00" * (settings.max_bitstream_bytes + 1)), 413, "payload-too-large")


def test_decode_needs_a_key(client, fake_codec):
    assert_problem(post_decode(client, fake_bitstream(fake_codec), key_headers={}), 401, "missing-api-key")
