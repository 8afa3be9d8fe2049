"""``POST /encode``: validate an image and its options, store it, enqueue its encode.

Everything a worker would refuse is refused here, before the 202: the options
by the codec's schema, the model by the one the workers encode with, and the
image by the codec's whole image policy under the workers' pixel limit (in
bounded work slots, off the event loop).
"""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, File, Form, Header, Request, Response, UploadFile, status

from service import schemas
from service.deps import CodecDep, JobsDep, OwnerDep, SettingsDep
from service.errors import ProblemError
from service.openapi import problem_responses
from service.schemas import JobCreate, JobPublic

router = APIRouter(tags=["jobs"])

_AT_MOST_ONE_TARGET = {"not": {"anyOf": [{"required": list(pair)} for pair in (
    ("target_bpp", "lmbda"), ("target_bpp", "target_psnr"), ("lmbda", "target_psnr"))]}}
"""The body rule validate_options enforces across fields: at most one of the three targets."""


@router.post(
    "/encode",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    responses=problem_responses(401, 409, 413, 415, 422, 429, 503),
    summary="Submit an image to encode",
    openapi_extra={"requestBody": {"content": {"multipart/form-data": {"schema": _AT_MOST_ONE_TARGET}}}},
)
async def encode(
    request: Request,
    response: Response,
    owner: OwnerDep,
    settings: SettingsDep,
    codec: CodecDep,
    jobs: JobsDep,
    file: Annotated[UploadFile, File(description="PNG, JPEG, WebP, BMP or TIFF image.")],
    target_bpp: Annotated[schemas.TargetBpp, Form(allow_inf_nan=False)] = None,
    lmbda: Annotated[schemas.Lmbda, Form(allow_inf_nan=False)] = None,
    target_psnr: Annotated[schemas.TargetPsnr, Form(allow_inf_nan=False)] = None,
    preset: Annotated[schemas.Preset, Form()] = "balanced",
    refine: Annotated[schemas.Switch, Form()] = None,
    adapt_lambda: Annotated[schemas.Switch, Form()] = None,
    bias_search: Annotated[schemas.Switch, Form()] = None,
    rate_control: Annotated[schemas.Switch, Form()] = None,
    refine_steps: Annotated[schemas.RefineSteps, Form()] = None,
    lambda_steps: Annotated[schemas.LambdaSteps, Form()] = None,
    rounding: Annotated[schemas.Rounding, Form()] = None,
    model: Annotated[schemas.ModelName, Form()] = None,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JobPublic:
    """Validate the upload (size, magic bytes, pixel count, the image policy, options) and enqueue it.

    Answers 202 with the job and ``Location: /jobs/{id}``. With an
    ``Idempotency-Key`` header, a retry with the same key and payload returns
    the same job; the same key with another payload is a 422. While every
    check slot is taken and the wait queue is full, 503 with ``Retry-After``.
    """
    data = await file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise ProblemError(413, "payload-too-large", f"the upload is larger than {settings.max_upload_bytes} bytes")
    if not data:
        raise ProblemError(422, "invalid-image", "the upload is empty")
    if codec.sniff_format(data) is None:
        raise ProblemError(415, "unsupported-media-type", "the upload is not a PNG, JPEG, WebP, BMP or TIFF image")
    if model is not None and model != settings.model:
        raise ProblemError(422, "invalid-options", f"model must be {settings.model!r}, the model this service's "
                                                   f"workers encode with; got {model!r}")
    form = JobCreate(target_bpp=target_bpp, lmbda=lmbda, target_psnr=target_psnr, preset=preset, refine=refine,
                     adapt_lambda=adapt_lambda, bias_search=bias_search, rate_control=rate_control,
                     refine_steps=refine_steps, lambda_steps=lambda_steps, rounding=rounding, model=settings.model)
    options = codec.validate_options(form.options())  # before the image: bad options cost no decode
    info = await request.app.state.probe_slots.run(codec.probe_image, data, settings.max_pixels)
    input_info = {"width": info.width, "height": info.height, "mode": info.mode, "format": info.format,
                  "bytes": len(data)}

    def submit() -> tuple[JobPublic, bool]:  # Redis round trips: in a thread, not on the event loop
        job, replayed = jobs.submit(owner, data, input_info, options, idempotency_key)
        return jobs.public(job), replayed

    job, replayed = await anyio.to_thread.run_sync(submit)
    if not replayed:
        request.app.state.metrics.jobs_submitted.inc()
    response.headers["Location"] = f"/jobs/{job.id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return job
