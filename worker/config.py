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
    job_monitoring_interval: int = Field(10, ge=1)
    """Seconds between heartbeats while a job runs (from a thread: the job runs in-process)."""
    heartbeat_grace: int = Field(20, ge=1)
    """Seconds. A running job whose worker sent no heartbeat for interval + grace is abandoned."""
    maintenance_interval: int = Field(30, ge=1)
    """Seconds between registry cleanups, which requeue the jobs of dead workers."""
    progress_interval: float = Field(0.5, ge=0.0)
    """Seconds. Least time between two progress writes to the job's meta."""
    upload_ttl_after_success: int = Field(600, ge=1)
    """Seconds an input is kept once its job succeeded (a late retry can still read it)."""
    log_level: str = "INFO"
