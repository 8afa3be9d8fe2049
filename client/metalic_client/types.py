"""Typed results of the API, written from its OpenAPI schema (never imported from the server)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)


class _Model(BaseModel):
    # Newer servers may add fields; old clients must keep working.
    model_config = ConfigDict(extra="allow")


class Progress(_Model):
    stage: str | None = None
    step: int | None = None
    steps: int | None = None
    bpp: float | None = None
    psnr: float | None = None


class JobError(_Model):
    type: str
    detail: str


class JobResult(_Model):
    bytes: int
    sha256: str
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def bpp(self) -> float | None:
        return self.metadata.get("bpp")

    @property
    def psnr(self) -> float | None:
        return self.metadata.get("psnr")


class JobLinks(_Model):
    self: str
    bitstream: str | None = None
    cancel: str | None = None


class Job(_Model):
    id: str
    status: JobStatus
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    attempts: int = 0
    input: dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    progress: Progress | None = None
    result: JobResult | None = None
    error: JobError | None = None
    links: JobLinks
