"""``GET /jobs/{id}``, ``GET /jobs/{id}/bitstream``, ``DELETE /jobs/{id}``."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from service.deps import JobsDep, OwnerDep
# PROBLEM_RESPONSES is also imported from here by the other route modules
from service.openapi import BITSTREAM_MEDIA_TYPE, PROBLEM_RESPONSES, problem_responses  # noqa: F401
from service.schemas import JobPublic

JobId = Annotated[str, Path(description="Job id (32 hex digits).", max_length=64)]

router = APIRouter(tags=["jobs"])


@router.get("/jobs/{job_id}", response_model=JobPublic, responses=problem_responses(401, 404, 422, 503),
            summary="Job status")
def get_job(job_id: JobId, owner: OwnerDep, jobs: JobsDep) -> JobPublic:
    """Status, progress while running, result metadata when done, error on failure."""
    return jobs.public(jobs.get(owner, job_id))


@router.get(
    "/jobs/{job_id}/bitstream",
    response_class=Response,
    responses={200: {"content": {BITSTREAM_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
                     "description": "The encoded bitstream"}, **problem_responses(401, 404, 409, 410, 422, 503)},
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
    responses=problem_responses(401, 404, 409, 422, 503),
    summary="Cancel a job",
)
def cancel_job(job_id: JobId, owner: OwnerDep, jobs: JobsDep) -> JobPublic:
    """A queued job is canceled at once; a running one stops at its next progress step."""
    return jobs.public(jobs.cancel(owner, job_id))
