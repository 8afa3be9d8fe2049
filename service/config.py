"""API settings, read from the environment with pydantic-settings.

Every field is ``METALIC_<NAME>``; the Redis URL is also read from plain
``REDIS_URL``. ``METALIC_API_KEYS`` is a comma-separated list of accepted keys.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from codec.constants import DEFAULT_MAX_PIXELS, DEFAULT_MODEL
from codec.image import PIXEL_CEILING
from worker.protocol import DEFAULT_QUEUE


TENANT_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class Settings(BaseSettings):
    """All knobs of the API process; one validated instance is injected per app."""

    model_config = SettingsConfigDict(env_prefix="METALIC_", extra="ignore")

    redis_url: str = Field(
        "redis://localhost:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "METALIC_REDIS_URL", "redis_url"),
    )
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Accepted bearer tokens, several at once. ``tenant:key`` names the tenant a key belongs to: every key of
    one tenant sees the same jobs, so a key is rotated by adding the new one, then removing the old one.
    A key with no ``tenant:`` prefix is its own tenant."""
    queue: str = DEFAULT_QUEUE

    max_upload_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    """Bytes. Largest accepted image upload (also bounds what one job stores in Redis)."""
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, le=PIXEL_CEILING)
    """Pixels. Largest accepted width x height, checked from the header before decoding. The workers
    read the same ``METALIC_MAX_PIXELS``, so an upload accepted here is one they encode."""
    max_bitstream_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    """Bytes. Largest bitstream accepted by ``POST /decode``."""
    max_jobs_in_flight: int = Field(8, ge=1)
    """Count. Queued plus running jobs one API key may have; past it, 429."""
    retry_after: int = Field(5, ge=1)
    """Seconds. The ``Retry-After`` sent with 429 and 503."""
    rate_limit: int = Field(1200, ge=0)
    """Count. Requests one API key may make per ``rate_window`` (polling included); past it, 429. 0 = no limit."""
    rate_window: int = Field(60, ge=1)
    """Seconds. The window of ``rate_limit``."""

    job_timeout: int = Field(1800, ge=10)
    """Seconds. Hard limit of one encode on a worker (RQ job timeout)."""
    job_retries: int = Field(2, ge=0)
    """Count. Times a job whose worker died is run again on another worker."""
    result_ttl: int = Field(7 * 24 * 3600, ge=60)
    """Seconds. How long results and bitstreams are kept after success."""
    upload_ttl: int = Field(24 * 3600, ge=60)
    """Seconds. Longest an upload waits for a worker; it is deleted as soon as its job ends, whatever the end."""
    failure_ttl: int = Field(7 * 24 * 3600, ge=60)
    """Seconds. How long failure records are kept."""
    reap_interval: float = Field(2.0, gt=0)
    """Seconds between two passes of the API's reaper, which requeues or ends the jobs of dead workers."""
    idempotency_ttl: int = Field(24 * 3600, ge=60)
    """Seconds. How long an ``Idempotency-Key`` maps to its job."""

    decode_concurrency: int = Field(2, ge=1)
    """Count. Decodes running at once in the API's thread pool."""
    decode_queue: int = Field(16, ge=0)
    """Count. Decodes allowed to wait for a slot; past it, 503 with Retry-After."""
    probe_concurrency: int = Field(2, ge=1)
    """Count. Uploads to ``POST /encode`` checked at once (decode plus the image policy) in the thread pool."""
    probe_queue: int = Field(16, ge=0)
    """Count. Uploads allowed to wait for a check slot; past it, 503 with Retry-After."""
    model: str = Field(DEFAULT_MODEL, min_length=1)
    """Model the workers encode with: the workers' own ``METALIC_MODEL``. ``POST /encode`` takes no other."""
    decode_device: str = "cpu"
    preload_model: str = "metalic-vr"
    """Model the API loads for /decode at startup ("" to load on the first decode instead)."""
    decoder: str = "codec.pipeline:decode"
    """``module:attribute`` of the decode function. A test seam."""

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value):
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("api_keys")
    @classmethod
    def _check_tenants(cls, value: list[str]) -> list[str]:
        for entry in value:
            tenant, sep, key = entry.partition(":")
            if sep and (not TENANT_RE.fullmatch(tenant) or not key):
                raise ValueError("an API key entry is 'key' or 'tenant:key' (tenant: letters, digits, . _ -)")
        return value

    def credentials(self) -> list[tuple[str, str | None]]:
        """(key, tenant or None) for every accepted key."""
        out = []
        for entry in self.api_keys:
            tenant, sep, key = entry.partition(":")
            out.append((key, tenant) if sep else (entry, None))
        return out
