"""Worker settings, read from the environment (pydantic-settings).

Every field can be set as ``METALIC_<NAME>``; the Redis URL also as plain
``REDIS_URL``, the name docker-compose and most hosting platforms use.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from codec.constants import DEFAULT_MAX_PIXELS
from codec.image import PIXEL_CEILING
from worker.protocol import DEFAULT_QUEUE


class WorkerSettings(BaseSettings):
    """Settings of one ``metalic worker`` process."""

    model_config = SettingsConfigDict(env_prefix="METALIC_", extra="ignore")

    redis_url: str = Field(
        "redis://localhost:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "METALIC_REDIS_URL", "redis_url"),
    )
    queue: str = DEFAULT_QUEUE
    model: str = Field("metalic-vr", min_length=1)
    """Registry slug of the one model this worker encodes with; the API reads the same ``METALIC_MODEL``
    and refuses jobs that name another."""
    device: str | None = None
    """``cuda``, ``cuda:1`` or ``cpu``; unset means CUDA when present, else CPU."""
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, le=PIXEL_CEILING)
    """Pixels. Largest width x height the encoder takes: the API's ``METALIC_MAX_PIXELS``, read
    from the same variable, so a job the API accepted is one this worker encodes."""
    encoder_factory: str = "codec.pipeline:Encoder"
    """``module:attribute`` called as ``factory(model=..., device=..., max_pixels=...)``. A test seam."""

    worker_ttl: int = Field(75, ge=5)
    """Seconds. TTL of the worker's registration; RQ blocks on the queue for TTL - 15 s."""
    job_monitoring_interval: int = Field(5, ge=1)
    """Seconds between two renewals of a running job's lease (by the watchdog thread)."""
    heartbeat_grace: int = Field(10, ge=1)
    """Seconds. The lease lives interval + grace without a renewal; then the job counts as abandoned."""
    stall_timeout: float = Field(300.0, gt=0)
    """Seconds the main thread may stay inside one native call (no Python line run) before the
    worker declares itself hung, gives its job back and exits."""
    reap_interval: float = Field(2.0, gt=0)
    """Seconds between two passes of the reaper thread, which requeues or fails abandoned jobs."""
    maintenance_interval: int = Field(30, ge=1)
    """Seconds between RQ's own registry cleanups (finished, failed, deferred, dead workers)."""
    progress_interval: float = Field(0.5, ge=0.0)
    """Seconds. Least time between two progress writes to the job's meta."""
    log_level: str = "INFO"

    @property
    def lease_ttl(self) -> int:
        """Seconds a job's lease lives without a renewal."""
        return self.job_monitoring_interval + self.heartbeat_grace
