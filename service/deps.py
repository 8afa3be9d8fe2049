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


def owner_id(api_key: str) -> str:
    """Stable, non-reversible id of an API key: what Redis stores instead of the key."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:32]


def require_owner(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    settings: Annotated[Settings, Depends(get_settings)],
) -> str:
    """Check the bearer token against every accepted key; returns the key's owner id."""
    challenge = {"WWW-Authenticate": 'Bearer realm="metalic"'}
    if credentials is None or not credentials.credentials:
        raise ProblemError(401, "missing-api-key", "send an API key as 'Authorization: Bearer <key>'",
                           headers=challenge)
    token = credentials.credentials.encode()
    matched = None
    for key in settings.api_keys:
        # Compare against every key, in constant time, so timing tells nothing.
        if hmac.compare_digest(token, key.encode()):
            matched = key
    if matched is None:
        raise ProblemError(401, "invalid-api-key", "the API key is not valid", headers=challenge)
    return owner_id(matched)


SettingsDep = Annotated[Settings, Depends(get_settings)]
RedisDep = Annotated[redis.Redis, Depends(get_redis)]
CodecDep = Annotated[CodecPort, Depends(get_codec)]
JobsDep = Annotated[JobService, Depends(get_jobs)]
OwnerDep = Annotated[str, Depends(require_owner)]
