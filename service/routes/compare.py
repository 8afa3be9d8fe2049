"""``POST /compare``: the same image coded by JPEG, WebP and AVIF at a byte budget.

The page calls it with the original upload and the size of the metalic file, and
shows the returned files next to the metalic reconstruction. The codecs and the
byte-budget search are :mod:`codec.baselines`, the same ones ``metalic demo``
prints. The work is CPU work in the API process (a handful of encodes per
codec), so it shares the decode endpoint's thread slots, with a wait queue of
its own, instead of adding a second pool.
"""

from __future__ import annotations

import base64
import io
import re
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from PIL import Image
from pydantic import BaseModel, Field, WithJsonSchema

from codec import baselines
from service.deps import OwnerDep, SettingsDep
from service.errors import ProblemError
from service.openapi import problem_responses
from service.schemas import JSON_INTEGER

router = APIRouter(tags=["compare"])

_CODECS_PATTERN = r"^[ \t]*({0})?[ \t]*(,[ \t]*({0})?[ \t]*)*$".format("|".join(baselines.CODECS))
"""What ``codecs`` may be: names of :data:`codec.baselines.CODECS`, comma-separated, empty items
ignored. Spaces and tabs only, spelled out: JSON Schema's ``\\s`` and Python's differ."""


class BaselinePublic(BaseModel):
    codec: str = Field(description="jpeg, webp or avif.")
    media_type: str
    quality: int = Field(description="The codec's quality setting that was chosen.")
    bytes: int
    bpp: float
    psnr: float = Field(description="dB, of the decoded file against the original (8-bit RGB).")
    fits: bool = Field(description="False: even the lowest quality is larger than the budget; this is that file.")
    data: str = Field(description="The encoded file, base64.")


class ComparePublic(BaseModel):
    width: int
    height: int
    budget: int = Field(description="The byte budget every baseline was fitted under.")
    original: str = Field(description="The image as the encoder sees it (orientation, ICC, alpha applied), "
                                      "a base64 PNG.")
    baselines: list[BaselinePublic]
    unavailable: list[str] = Field(description="Codecs this server's Pillow cannot write.")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _compare(data: bytes, budget: int, names: list[str], max_pixels: int) -> ComparePublic:
    from codec.image import load_image

    img = load_image(data, max_pixels)
    results = baselines.compare(img.rgb, budget, names)
    png = io.BytesIO()
    Image.fromarray(img.rgb, "RGB").save(png, format="PNG", compress_level=3)
    pixels = img.width * img.height
    return ComparePublic(
        width=img.width, height=img.height, budget=budget, original=_b64(png.getvalue()),
        baselines=[BaselinePublic(codec=b.codec, media_type=baselines.CODECS[b.codec].media_type, quality=b.quality,
                                  bytes=len(b.data), bpp=len(b.data) * 8 / pixels, psnr=round(b.psnr, 4),
                                  fits=b.fits, data=_b64(b.data)) for b in results],
        unavailable=[name for name in baselines.CODECS if name not in baselines.available()],
    )


@router.post(
    "/compare",
    response_model=ComparePublic,
    responses=problem_responses(401, 413, 415, 422, 503),
    summary="JPEG, WebP and AVIF at the same number of bytes",
)
async def compare(
    request: Request,
    owner: OwnerDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="The original image (PNG, JPEG, WebP, BMP or TIFF).")],
    budget: Annotated[int, Form(ge=1, le=1 << 30, description="Bytes each baseline may use: the metalic file size."),
                      JSON_INTEGER],  # after Form: before it, the bounds leave the schema
    codecs: Annotated[str | None, Form(), WithJsonSchema({
        "type": "string", "pattern": _CODECS_PATTERN,
        "description": f"Comma-separated subset of {', '.join(baselines.CODECS)} (default: every one this "
                       "server can write)."})] = None,
) -> ComparePublic:
    """For each codec, the highest quality whose file is at most ``budget`` bytes, with its PSNR."""
    data = await file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise ProblemError(413, "payload-too-large", f"the upload is larger than {settings.max_upload_bytes} bytes")
    if not data:
        raise ProblemError(422, "invalid-image", "the upload is empty")
    if request.app.state.codec.sniff_format(data) is None:
        raise ProblemError(415, "unsupported-media-type", "the upload is not a PNG, JPEG, WebP, BMP or TIFF image")
    have = baselines.available()
    if codecs is None:
        names = have
    else:
        names = [name.strip(" \t") for name in codecs.split(",") if name.strip(" \t")]
        if not re.fullmatch(_CODECS_PATTERN, codecs):
            unknown = [name for name in names if name not in baselines.CODECS]
            raise ProblemError(422, "invalid-options", f"unknown codec(s) {', '.join(map(repr, unknown))}; "
                                                       f"known: {', '.join(baselines.CODECS)}")
        names = [name for name in names if name in have]
    return await request.app.state.compare_slots.run(_compare, data, budget, names, settings.max_pixels)
