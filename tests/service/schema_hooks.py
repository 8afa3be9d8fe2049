"""What schemathesis needs to know to send this API valid requests: real upload files, fresh idempotency keys.

* The schema says what ``file`` carries (``encoding.contentType``: the image
  formats, or a metalic bitstream); a schema-valid request must then carry such
  a file, so schemathesis is told how to make one. Images come in every format
  and in modes each can hold, 1x1 up to 24x24; bitstreams are small images
  coded by the shipped model (``preset=fast``), made on first use.
* An ``Idempotency-Key`` names one logical request (the IETF
  idempotency-key draft: a client makes a new, unique key for each): a key
  reused with another payload is refused with 422 by design, which no schema
  can state. So every call sends a fresh key where the case has one
  (tests/service/test_api_encode.py covers replays and reuse).

Imported by tests/service/test_api_schema.py, and by a run against a live service::

    SCHEMATHESIS_HOOKS=tests.service.schema_hooks schemathesis run --checks all \\
        -H "Authorization: Bearer $KEY" http://127.0.0.1:8000/openapi.json
"""

from __future__ import annotations

import functools
import uuid

import schemathesis
from hypothesis import strategies as st

from service.openapi import BITSTREAM_MEDIA_TYPE, IMAGE_MEDIA_TYPES
from tests.support.images import file_bytes, image_in_mode, make_image

FORMAT_MODES = {
    "image/png": ("PNG", ("RGB", "L", "RGBA", "LA", "P", "1", "I;16")),
    "image/jpeg": ("JPEG", ("RGB", "L", "CMYK")),
    "image/webp": ("WEBP", ("RGB", "RGBA")),
    "image/bmp": ("BMP", ("RGB", "L", "1")),
    "image/tiff": ("TIFF", ("RGB", "L", "RGBA", "CMYK", "LAB", "YCbCr", "I;16", "PA")),
}
"""Media type -> (Pillow format, modes that format holds)."""

assert set(FORMAT_MODES) == set(IMAGE_MEDIA_TYPES)


def _image(fmt: str, width: int, height: int, mode: str, seed: int, photo: bool) -> bytes:
    im = image_in_mode(width, height, mode, seed)
    if photo and mode in ("RGB", "L", "RGBA"):
        im = make_image(width, height, mode, seed)
    data = file_bytes(im, fmt)
    assert data is not None, (fmt, mode)
    return data


def images(media_type: str) -> st.SearchStrategy[bytes]:
    """Files of one image format: 1x1 to 24x24, any mode the format holds, noise or photo-like."""
    fmt, modes = FORMAT_MODES[media_type]
    return st.builds(_image, st.just(fmt), st.integers(1, 24), st.integers(1, 24), st.sampled_from(modes),
                     st.integers(0, 3), st.booleans())


@functools.cache
def shipped_bitstreams() -> tuple[bytes, ...]:
    """A few real .mlic files of the shipped model (a 1x1 image among them)."""
    from codec.pipeline import Encoder

    encoder = Encoder(device="cpu")
    sizes = ((1, 1), (7, 5), (24, 16), (32, 32))
    return tuple(encoder.encode(file_bytes(make_image(w, h, seed=i), "PNG"), {"preset": "fast", "lmbda": 0.01})
                 .bitstream for i, (w, h) in enumerate(sizes))


def bitstreams() -> st.SearchStrategy[bytes]:
    return st.integers(0, 3).map(lambda i: shipped_bitstreams()[i])


for _media_type in IMAGE_MEDIA_TYPES:
    schemathesis.openapi.media_type(_media_type, images(_media_type))
schemathesis.openapi.media_type(BITSTREAM_MEDIA_TYPE, bitstreams())


IDEMPOTENCY_KEY_MAX = 255
"""Characters. The longest Idempotency-Key the API takes (longer ones are the negative cases: kept)."""


def _fresh_idempotency_key(case) -> None:
    for name in list(case.headers or {}):
        value = case.headers[name]
        if name.lower() == "idempotency-key" and isinstance(value, str) and len(value) <= IDEMPOTENCY_KEY_MAX:
            case.headers[name] = uuid.uuid4().hex


def _fill_placeholder_fields(case) -> None:
    # schemathesis 4.32.5's coverage phase sends a multipart body whose upload comes from a media
    # type strategy as *positive*, with every other required field set to "" (coverage/_operation.py,
    # _generate_multipart_body_from_custom_strategies): /compare's required integer budget then reads
    # "" and the case is not the valid request it is labelled. Such a field gets the least value its
    # schema allows, so the case is what it claims to be.
    meta = getattr(case, "meta", None)
    if meta is None or meta.generation.mode is not schemathesis.GenerationMode.POSITIVE:
        return
    if not isinstance(case.body, dict):
        return
    body = next((b for b in case.operation.body if b.media_type == case.media_type), None)
    schema = body.resolved_schema if body is not None else None
    for name in (schema or {}).get("required", []):
        field = schema["properties"].get(name, {})
        if case.body.get(name) == "" and field.get("type") in ("integer", "number"):
            case.body[name] = field.get("minimum", 0)


@schemathesis.hook
def before_call(context, case, kwargs):
    _fresh_idempotency_key(case)
    _fill_placeholder_fields(case)
