"""Request and response models of the API (``XCreate`` in, ``XPublic`` out)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from codec.options import MAX_LAMBDA_STEPS, MAX_REFINE_STEPS, ROUNDINGS, TARGET_BPP_RANGE, TARGET_PSNR_RANGE
from worker.protocol import JobState

JobStatus = JobState
"""Public job status: queued, running, succeeded, failed, canceled."""


class JobCreate(BaseModel):
    """Encode options of ``POST /encode`` (the multipart form fields besides ``file``).

    One field per :class:`codec.options.EncodeOptions` field (a test holds them
    equal). At most one of ``target_bpp``, ``lmbda`` and ``target_psnr``; none
    means the model's default λ. The ranges are checked by
    ``codec.options.validate_options``, the single source of the rules.
    """

    model_config = ConfigDict(extra="forbid")

    target_bpp: float | None = Field(None, allow_inf_nan=False,
                                     description="Target bits per pixel, {}..{}.".format(*TARGET_BPP_RANGE))
    lmbda: float | None = Field(None, allow_inf_nan=False, description="Rate-distortion λ, 1e-4..1.")
    target_psnr: float | None = Field(None, allow_inf_nan=False,
                                      description="Target PSNR in dB, {}..{}.".format(*TARGET_PSNR_RANGE))
    preset: Literal["fast", "balanced", "max"] = "balanced"
    refine: bool | None = None
    adapt_lambda: bool | None = None
    bias_search: bool | None = None
    rate_control: bool | None = None
    refine_steps: int | None = Field(None, description=f"Latent refinement steps, 0..{MAX_REFINE_STEPS}.")
    lambda_steps: int | None = Field(None, description=f"λ_k adaptation steps, 0..{MAX_LAMBDA_STEPS}.")
    rounding: Literal[ROUNDINGS] | None = Field(None, description="Quantization surrogate of the refinement.")
    model: str | None = Field(None, max_length=64, description="Model registry slug (default: metalic-vr).")

    def options(self) -> dict[str, Any]:
        """The options dict for ``validate_options``: unset fields left out."""
        return self.model_dump(exclude_none=True)


class Progress(BaseModel):
    stage: str | None = None
    step: int | None = None
    steps: int | None = None
    bpp: float | None = None
    psnr: float | None = None


class JobError(BaseModel):
    type: str = Field(description="Stable slug of the cause, e.g. invalid-image, job-timeout, worker-lost.")
    detail: str


class JobResult(BaseModel):
    bytes: int = Field(description="Size of the bitstream in bytes.")
    sha256: str
    metadata: dict[str, Any] = Field(description="Codec metadata: bpp, psnr, ms_ssim, width, height, stages, ...")


class JobLinks(BaseModel):
    self: str
    bitstream: str | None = None
    cancel: str | None = None


class JobPublic(BaseModel):
    id: str
    status: JobStatus
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    attempts: int = 0
    input: dict[str, Any] | None = Field(None, description="width, height, mode, format, bytes of the upload.")
    options: dict[str, Any] | None = None
    progress: Progress | None = None
    result: JobResult | None = None
    error: JobError | None = None
    links: JobLinks


class Problem(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow")

    type: str
    code: str
    title: str
    status: int
    detail: str
    instance: str | None = None


class HealthPublic(BaseModel):
    status: Literal["ok"]


class ReadinessPublic(BaseModel):
    status: Literal["ready", "not-ready"]
    redis: bool
    workers: int
    model_loaded: bool
    detail: str | None = None
