"""``POST /encode``: validate an image synchronously, store it, enqueue its encode."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Header, Request, Response, UploadFile, status

from codec.options import MAX_LAMBDA_STEPS, MAX_REFINE_STEPS, ROUNDINGS
from service.deps import CodecDep, JobsDep, OwnerDep, SettingsDep
from service.errors import ProblemError
from service.routes.jobs import PROBLEM_RESPONSES
from service.schemas import JobCreate, JobPublic

router = APIRouter(tags=["jobs"])

@router.post(
    "/encode",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    responses={**PROBLEM_RESPONSES, 413: PROBLEM_RESPONSES[413], 415: PROBLEM_RESPONSES[415],
               429: PROBLEM_RESPONSES[429]},
    summary="Submit an image to encode",
)
def encode(
    request: Request,
    response: Response,
    owner: OwnerDep,
    settings: SettingsDep,
    codec: CodecDep,
    jobs: JobsDep,
    file: Annotated[UploadFile, File(description="PNG, JPEG, WebP, BMP or TIFF image.")],
    target_bpp: Annotated[float | None, Form(allow_inf_nan=False, description="Target bits per pixel, 0.01..8.")] = None,
    lmbda: Annotated[float | None, Form(allow_inf_nan=False, description="Rate-distortion λ, 1e-4..1.")] = None,
    target_psnr: Annotated[float | None, Form(allow_inf_nan=False, description="Target PSNR in dB, 15..60.")] = None,
    preset: Annotated[Literal["fast", "balanced", "max"], Form()] = "balanced",
    refine: Annotated[bool | None, Form()] = None,
    adapt_lambda: Annotated[bool | None, Form()] = None,
    bias_search: Annotated[bool | None, Form()] = None,
    rate_control: Annotated[bool | None, Form()] = None,
    refine_steps: Annotated[int | None, Form(description=f"Latent refinement steps, 0..{MAX_REFINE_STEPS}.")] = None,
    lambda_steps: Annotated[int | None, Form(description=f"λ_k adaptation steps, 0..{MAX_LAMBDA_STEPS}.")] = None,
    rounding: Annotated[Literal[ROUNDINGS] | None, Form(description="Quantization surrogate of the refinement.")] = None,
    model: Annotated[str | None, Form(max_length=64)] = None,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JobPublic:
    """Validate the upload (size, magic bytes, pixel count, mode, options) and enqueue it.

    Answers 202 with the job and ``Location: /jobs/{id}``. With an
    ``Idempotency-Key`` header, a retry with the same key and payload returns
    the same job; the same key with another payload is a 422.
    """
    data = file.file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise ProblemError(413, "payload-too-large", f"the upload is larger than {settings.max_upload_bytes} bytes")
    if not data:
        raise ProblemError(422, "invalid-image", "the upload is empty")
    fmt = codec.sniff_format(data)
    if fmt is None:
        raise ProblemError(415, "unsupported-media-type", "the upload is not a PNG, JPEG, WebP, BMP or TIFF image")
    info = codec.probe_image(data, settings.max_pixels)
    if info.mode not in codec.supported_modes:
        raise ProblemError(422, "unsupported-image-mode", f"images in Pillow mode {info.mode!r} are not supported")
    form = JobCreate(target_bpp=target_bpp, lmbda=lmbda, target_psnr=target_psnr, preset=preset, refine=refine,
                     adapt_lambda=adapt_lambda, bias_search=bias_search, rate_control=rate_control,
                     refine_steps=refine_steps, lambda_steps=lambda_steps, rounding=rounding, model=model)
    options = codec.validate_options(form.options())
    input_info = {"width": info.width, "height": info.height, "mode": info.mode, "format": info.format,
                  "bytes": len(data)}
    job, replayed = jobs.submit(owner, data, input_info, options, idempotency_key)
    if not replayed:
        request.app.state.metrics.jobs_submitted.inc()
    response.headers["Location"] = f"/jobs/{job.id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return jobs.public(job)
