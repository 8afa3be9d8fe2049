"""Helpers shared by the API tests (imported by name: this directory is on sys.path)."""

from __future__ import annotations

import io

from PIL import Image

KEY_A = "test-key-alpha"
KEY_B = "test-key-beta"


def image_bytes(width: int = 32, height: int = 24, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    im = Image.new(mode, (width, height))
    if mode == "RGB":
        im.putdata([((x * 7) % 256, (y * 5) % 256, (x + y) % 256) for y in range(height) for x in range(width)])
    buffer = io.BytesIO()
    im.save(buffer, format=fmt)
    return buffer.getvalue()


def auth(key: str = KEY_A) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}



def submit(client, data: bytes | None = None, key: str = KEY_A, headers: dict | None = None, **form):
    files = {"file": ("image.png", data if data is not None else image_bytes(), "image/png")}
    form.setdefault("target_bpp", "0.5")
    return client.post("/encode", files=files, data=form, headers={**auth(key), **(headers or {})})


PROBLEM = "application/problem+json"


def assert_problem(response, status: int, code: str) -> dict:
    """Assert a problem+json response with this status and stable code; returns the body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:metalic:problem:{code}"
    return body
