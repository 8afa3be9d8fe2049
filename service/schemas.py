"""Request and response models of the API (``XCreate`` in, ``XPublic`` out)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from codec.constants import LAMBDA_MAX, LAMBDA_MIN
from codec.options import MAX_LAMBDA_STEPS, MAX_REFINE_STEPS, PRESETS, ROUNDINGS, TARGET_BPP_RANGE, TARGET_PSNR_RANGE
from worker.protocol import JobState

JobStatus = JobState
"""Public job status: queued, running, succeeded, failed, canceled."""


def _form_field(schema: dict, description: str) -> WithJsonSchema:
    # A multipart form has no null: a field is sent or left out, so the schema
    # names the one type it takes. The ranges are the codec's own constants;
    # codec.options.validate_options enforces them (422 invalid-options).
    return WithJsonSchema({**schema, "description": description})


def _written_as_json(kind: str, pattern: str) -> BeforeValidator:
    """A form value of a JSON-typed field must be spelled as JSON spells it.

    Pydantic's lax parsing also reads ``1.0`` and ``1_000`` as integers and
    ``yes``, ``on`` or ``1`` as true, which the schema's types do not admit;
    the SDK and the page send JSON literals.
    """
    literal = re.compile(pattern)

    def check(value):
        if isinstance(value, str) and not literal.fullmatch(value):
            raise ValueError(f"must be {kind} written as in JSON, got {value!r}")
        return value

    return BeforeValidator(check)


JSON_NUMBER = _written_as_json("a number", r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
JSON_INTEGER = _written_as_json("an integer", r"-?(0|[1-9][0-9]*)")
JSON_BOOLEAN = _written_as_json("true or false", r"true|false")

TargetBpp = Annotated[float | None, JSON_NUMBER, _form_field(
    {"type": "number", "minimum": TARGET_BPP_RANGE[0], "maximum": TARGET_BPP_RANGE[1]},
    "Target bits per pixel of the real file. At most one of target_bpp, lmbda, target_psnr.")]
Lmbda = Annotated[float | None, JSON_NUMBER, _form_field(
    {"type": "number", "minimum": LAMBDA_MIN, "maximum": LAMBDA_MAX}, "Rate-distortion λ.")]
TargetPsnr = Annotated[float | None, JSON_NUMBER, _form_field(
    {"type": "number", "minimum": TARGET_PSNR_RANGE[0], "maximum": TARGET_PSNR_RANGE[1]},
    "Target PSNR in dB: the smallest file reaching it.")]
Preset = Literal[tuple(PRESETS)]
Switch = Annotated[bool | None, JSON_BOOLEAN,
                   _form_field({"type": "boolean"}, "Turns one stage on or off; unset: the preset's.")]
RefineSteps = Annotated[int | None, JSON_INTEGER, _form_field(
    {"type": "integer", "minimum": 0, "maximum": MAX_REFINE_STEPS}, "Latent refinement steps.")]
LambdaSteps = Annotated[int | None, JSON_INTEGER, _form_field(
    {"type": "integer", "minimum": 0, "maximum": MAX_LAMBDA_STEPS}, "λ_k adaptation steps.")]
Rounding = Annotated[Literal[ROUNDINGS] | None, _form_field(
    {"type": "string", "enum": list(ROUNDINGS)}, "Quantization surrogate of the refinement.")]
ModelName = Annotated[str | None, _form_field(
    {"type": "string", "minLength": 1, "maxLength": 64}, "Model registry slug; only the workers' model is taken.")]


class JobCreate(BaseModel):
    """Encode options of ``POST /encode`` (the multipart form fields besides ``file``).

    One field per :class:`codec.options.EncodeOptions` field (a test holds them
    equal). At most one of ``target_bpp``, ``lmbda`` and ``target_psnr``; none
    means the model's default λ. The ranges are checked by
    ``codec.options.validate_options``, the single source of the rules.
    """

    model_config = ConfigDict(extra="forbid")

    target_bpp: TargetBpp = None
    lmbda: Lmbda = None
    target_psnr: TargetPsnr = None
    preset: Preset = "balanced"
    refine: Switch = None
    adapt_lambda: Switch = None
    bias_search: Switch = None
    rate_control: Switch = None
    refine_steps: RefineSteps = None
    lambda_steps: LambdaSteps = None
    rounding: Rounding = None
    model: ModelName = None

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
