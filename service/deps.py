"""Dependencies injected into the route handlers: settings, Redis, codec, auth, jobs."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

import redis
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.codec_port import CodecPort
from service.config import Settings
from service.errors import ProblemError
from service.jobs import JobService

bearer = HTTPBearer(auto_error=False, description="An API key from METALIC_API_KEYS, as a bearer token.")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_redis(request: Request) -> redis.Redis:
    return request.app.state.redis


def get_codec(request: Request) -> CodecPort:
    return request.app.state.codec


def get_jobs(request: Request) -> JobService:
    return request.app.state.jobs


def key_id(api_key: str) -> str:
    """Stable, non-reversible id of an API key: what Redis stores instead of the key."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:32]


def owner_id(api_key: str, tenant: str | None = None) -> str:
    """Who owns the jobs a key makes: its tenant (so every key of it sees them), else the key itself."""
    if tenant is None:
        return key_id(api_key)
    return hashlib.sha256(b"tenant\0" + tenant.encode()).hexdigest()[:32]


def require_owner(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    settings: Annotated[Settings, Depends(get_settings)],
) -> str:
    """Check the bearer token against every accepted key and count it against its rate limit.

    Returns:
        str. The owner id of the key's tenant.
    """
    challenge = {"WWW-Authenticate": 'Bearer realm="metalic"'}
    if credentials is None or not credentials.credentials:
        raise ProblemError(401, "missing-api-key", "send an API key as 'Authorization: Bearer <key>'",
                           headers=challenge)
    token = credentials.credentials.encode()
    matched = None
    for key, tenant in settings.credentials():
        # Compare against every key, in constant time, so timing tells nothing.
        if hmac.compare_digest(token, key.encode()):
            matched = (key, tenant)
    if matched is None:
        raise ProblemError(401, "invalid-api-key", "the API key is not valid", headers=challenge)
    request.app.state.rate_limiter.check(key_id(matched[0]))
    return owner_id(*matched)


SettingsDep = Annotated[Settings, Depends(get_settings)]
RedisDep = Annotated[redis.Redis, Depends(get_redis)]
CodecDep = Annotated[CodecPort, Depends(get_codec)]
JobsDep = Annotated[JobService, Depends(get_jobs)]
OwnerDep = Annotated[str, Depends(require_owner)]
