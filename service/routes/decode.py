"""``POST /decode``: a bitstream in, a PNG out; off the event loop, bounded concurrency."""

from __future__ import annotations

import io
import time
from typing import Annotated

import anyio
from fastapi import APIRouter, File, Request, Response, UploadFile

from service.deps import CodecDep, OwnerDep, SettingsDep
from service.errors import ProblemError
from service.routes.jobs import PROBLEM_RESPONSES

router = APIRouter(tags=["decode"])

PNG_LEVEL = 1
"""zlib level of the PNG answer. Lossless at every level; 1 writes a Kodak image in about a third of
level 3's time for a file a few per cent larger (``metalic bench speed`` times both)."""


def _decode_to_png(codec, data: bytes, device: str, max_pixels: int) -> tuple[bytes, dict]:
    # the image policy's pixel limit bounds what a stream may declare, as it bounds uploads
    result = codec.decode(data, device, max_pixels)
    buffer = io.BytesIO()
    result.image.save(buffer, format="PNG", compress_level=PNG_LEVEL)
    return buffer.getvalue(), dict(result.metadata)


@router.post(
    "/decode",
    response_class=Response,
    responses={200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                     "description": "The decoded image"},
               **{code: PROBLEM_RESPONSES[code] for code in (401, 413, 422, 503)}},
    summary="Decode a bitstream to PNG",
)
async def decode(
    request: Request,
    owner: OwnerDep,
    settings: SettingsDep,
    codec: CodecDep,
    file: Annotated[UploadFile, File(description="A metalic bitstream (.mlic).")],
) -> Response:
    """Decode in a worker thread; at most ``decode_concurrency`` at once, a short wait queue beyond."""
    data = await file.read(settings.max_bitstream_bytes + 1)
    if len(data) > settings.max_bitstream_bytes:
        raise ProblemError(413, "payload-too-large",
                           f"the bitstream is larger than {settings.max_bitstream_bytes} bytes")
    state = request.app.state
    metrics = state.metrics
    if state.decode_waiting >= settings.decode_concurrency + settings.decode_queue:
        metrics.decodes.labels("busy").inc()
        raise ProblemError(503, "decoder-busy", "too many decodes in progress, retry later",
                           headers={"Retry-After": str(settings.retry_after)})
    state.decode_waiting += 1
    metrics.decodes_in_flight.inc()
    started = time.perf_counter()
    try:
        png, metadata = await anyio.to_thread.run_sync(
            _decode_to_png, codec, data, settings.decode_device, settings.max_pixels, limiter=state.decode_limiter
        )
    except ValueError:
        metrics.decodes.labels("invalid").inc()
        raise
    finally:
        state.decode_waiting -= 1
        metrics.decodes_in_flight.dec()
    metrics.decode_seconds.observe(time.perf_counter() - started)
    metrics.decodes.labels("ok").inc()
    headers = {f"X-Metalic-{k.replace('_', '-').title()}": str(metadata[k])
               for k in ("width", "height", "model") if k in metadata}
    return Response(png, media_type="image/png", headers=headers)
