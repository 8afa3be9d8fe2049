"""``GET /jobs/{id}``, ``GET /jobs/{id}/bitstream``, ``DELETE /jobs/{id}``."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from service.deps import JobsDep, OwnerDep
from service.errors import PROBLEM_JSON
from service.schemas import JobPublic, Problem

BITSTREAM_MEDIA_TYPE = "application/vnd.metalic.bitstream"

_problem = {"model": Problem, "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
PROBLEM_RESPONSES: dict[int | str, dict] = {
    401: {**_problem, "description": "Missing or invalid API key"},
    404: {**_problem, "description": "No such job for this API key"},
    409: {**_problem, "description": "The job is not in a state that allows this"},
    410: {**_problem, "description": "The result has expired"},
    413: {**_problem, "description": "Upload or image too large"},
    415: {**_problem, "description": "Not an accepted image format"},
    422: {**_problem, "description": "Invalid input"},
    429: {**_problem, "description": "Too many jobs in flight for this key; see Retry-After"},
    503: {**_problem, "description": "Backend unavailable; see Retry-After"},
}

JobId = Annotated[str, Path(description="Job id (32 hex digits).", max_length=64)]

router = APIRouter(tags=["jobs"])


def _pick(*codes: int) -> dict:
    return {code: PROBLEM_RESPONSES[code] for code in codes}


@router.get("/jobs/{job_id}", response_model=JobPublic, responses=_pick(401, 404, 503), summary="Job status")
def get_job(job_id: JobId, owner: OwnerDep, jobs: JobsDep) -> JobPublic:
    """Status, progress while running, result metadata when done, error on failure."""
    return jobs.public(jobs.get(owner, job_id))


@router.get(
    "/jobs/{job_id}/bitstream",
    response_class=Response,
    responses={200: {"content": {BITSTREAM_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
                     "description": "The encoded bitstream"}, **_pick(401, 404, 409, 410, 503)},
    summary="Download the bitstream",
)
def get_bitstream(job_id: JobId, owner: OwnerDep, jobs: JobsDep) -> Response:
    """The bytes the job's outcome describes; ``Repr-Digest`` (RFC 9530) carries their sha256 to check."""
    data, sha256 = jobs.bitstream(owner, job_id)
    digest = base64.b64encode(bytes.fromhex(sha256)).decode()
    return Response(data, media_type=BITSTREAM_MEDIA_TYPE,
                    headers={"Content-Disposition": f'attachment; filename="{job_id}.mlic"',
                             "Repr-Digest": f"sha-256=:{digest}:", "ETag": f'"{sha256}"'})


@router.delete(
    "/jobs/{job_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    responses=_pick(401, 404, 409, 503),
    summary="Cancel a job",
)
def cancel_job(job_id: JobId, owner: OwnerDep, jobs: JobsDep) -> JobPublic:
    """A queued job is canceled at once; a running one stops at its next progress step."""
    return jobs.public(jobs.cancel(owner, job_id))
