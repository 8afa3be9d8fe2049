"""The SDK's retry core, exceptions and models, on mocked transports (no server)."""

from __future__ import annotations

import httpx
import pytest
from metalic_client import (
    APIConnectionError,
    AsyncClient,
    AuthenticationError,
    Client,
    IntegrityError,
    InternalServerError,
    Job,
    JobFailedError,
    JobStatus,
    NotFoundError,
    RateLimitError,
    UnprocessableEntityError,
)
from metalic_client._base import retry_after_seconds

JOB = {"id": "a" * 32, "status": "queued", "links": {"self": "/jobs/" + "a" * 32}}
PROBLEM = {"type": "urn:metalic:problem:too-many-jobs", "code": "too-many-jobs", "title": "Too many jobs",
           "status": 429, "detail": "slow down"}


def make(responses, async_=False, **kwargs):
    """A client whose transport answers from ``responses`` (callables or Responses), recording requests."""
    seen: list[httpx.Request] = []
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    if async_:
        async def ahandler(request):
            return handler(request)

        client = AsyncClient("http://svc", "key", http_client=httpx.AsyncClient(transport=httpx.MockTransport(ahandler)),
                             **kwargs)
        delays: list[float] = []

        async def fake_sleep(seconds):
            delays.append(seconds)

        client._sleep = fake_sleep
    else:
        client = Client("http://svc", "key", http_client=httpx.Client(transport=httpx.MockTransport(handler)),
                        **kwargs)
        delays = []
        client._sleep = delays.append
    return client, seen, delays


class TestClient:
    def test_encode_sends_form_key_and_bearer(self):
        client, seen, _ = make([httpx.Response(202, json=JOB)])
        job = client.encode(b"\x89PNG...", target_bpp=0.25, preset="fast", refine=False, wait=False)
        assert type(job) is Job and job.status is JobStatus.QUEUED
        request = seen[0]
        assert request.headers["authorization"] == "Bearer key"
        assert request.headers["idempotency-key"].startswith("metalic-")
        body = request.content.decode("latin-1")
        assert 'name="target_bpp"\r\n\r\n0.25' in body and 'name="refine"\r\n\r\nfalse' in body
        assert "lmbda" not in body

    def test_retries_429_honouring_retry_after_with_the_same_idempotency_key(self):
        client, seen, delays = make([
            httpx.Response(429, json=PROBLEM, headers={"Retry-After": "3"}),
            httpx.Response(503, json={**PROBLEM, "status": 503}),
            httpx.Response(202, json=JOB),
        ])
        client.encode(b"img", target_bpp=0.5, wait=False)
        assert len(seen) == 3
        assert len({r.headers["idempotency-key"] for r in seen}) == 1
        assert 3.0 <= delays[0] <= 3.3  # Retry-After, plus at most 10% jitter
        assert 0.375 <= delays[1] <= 1.0  # backoff 0.5 * 2**1 with up to 25% jitter down

    def test_retries_connection_errors_then_raises_typed(self):
        client, seen, delays = make([httpx.ConnectError("refused")] * 3, max_retries=2)
        with pytest.raises(APIConnectionError):
            client.get_job("x")
        assert len(seen) == 3 and len(delays) == 2

    def test_gives_up_after_max_retries_with_the_last_error(self):
        client, seen, _ = make([httpx.Response(500, json={"code": "internal-error", "detail": "boom"})] * 3,
                               max_retries=2)
        with pytest.raises(InternalServerError) as info:
            client.get_job("x")
        assert info.value.status == 500 and info.value.code == "internal-error"

    @pytest.mark.parametrize("status,exc", [(401, AuthenticationError), (404, NotFoundError),
                                            (422, UnprocessableEntityError)])
    def test_4xx_is_not_retried_and_typed(self, status, exc):
        client, seen, _ = make([httpx.Response(status, json={"code": "x", "detail": "d", "status": status})])
        with pytest.raises(exc) as info:
            client.get_job("x")
        assert type(info.value) is exc and info.value.detail == "d"
        assert len(seen) == 1

    def test_rate_limit_error_after_retries(self):
        client, _, _ = make([httpx.Response(429, json=PROBLEM)] * 2, max_retries=1)
        with pytest.raises(RateLimitError) as info:
            client.get_job("x")
        assert info.value.code == "too-many-jobs"

    def test_409_is_retried_only_with_retry_after(self):
        client, seen, _ = make([httpx.Response(409, headers={"Retry-After": "1"}, json={}),
                                httpx.Response(202, json=JOB)])
        client.encode(b"img", wait=False)
        assert len(seen) == 2
        client, seen, _ = make([httpx.Response(409, json={"code": "job-finished"})])
        with pytest.raises(Exception):
            client.cancel("x")
        assert len(seen) == 1

    def test_wait_reports_progress_and_raises_on_failure(self):
        running = {**JOB, "status": "running", "progress": {"stage": "refine", "step": 1, "steps": 4}}
        failed = {**JOB, "status": "failed", "error": {"type": "invalid-image", "detail": "bad"}}
        client, _, _ = make([httpx.Response(202, json=JOB), httpx.Response(200, json=running),
                             httpx.Response(200, json=running), httpx.Response(200, json=failed)])
        seen = []
        with pytest.raises(JobFailedError) as info:
            client.encode(b"img", on_progress=lambda job: seen.append(job.status.value))
        assert seen == ["queued", "running", "failed"]
        assert info.value.job.error.type == "invalid-image"

    def test_unknown_fields_from_a_newer_server_are_kept(self):
        job = Job.model_validate({**JOB, "new_field": 1})
        assert job.new_field == 1


def bitstream_response(data: bytes, digest_of: bytes | None = None) -> httpx.Response:
    import base64
    import hashlib

    headers = {}
    if digest_of is not None:
        headers["Repr-Digest"] = "sha-256=:" + base64.b64encode(hashlib.sha256(digest_of).digest()).decode() + ":"
    return httpx.Response(200, content=data, headers=headers)


def succeeded(data: bytes) -> Job:
    import hashlib

    return Job.model_validate({**JOB, "status": "succeeded",
                               "result": {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}})


class TestBitstreamIntegrity:
    def test_matching_digest_and_job_sha256_pass(self, tmp_path):
        client, _, _ = make([bitstream_response(b"MLIC-ok", digest_of=b"MLIC-ok")])
        out = tmp_path / "x.mlic"
        assert client.download_bitstream(succeeded(b"MLIC-ok"), out) == b"MLIC-ok"
        assert out.read_bytes() == b"MLIC-ok"

    def test_bytes_other_than_the_jobs_are_refused_and_not_written(self, tmp_path):
        client, _, _ = make([bitstream_response(b"MLIC-other")])
        out = tmp_path / "x.mlic"
        with pytest.raises(IntegrityError) as info:
            client.download_bitstream(succeeded(b"MLIC-ok"), out)
        assert info.value.job_id == JOB["id"] and not out.exists()

    def test_a_body_that_disagrees_with_its_digest_header_is_refused(self):
        client, _, _ = make([bitstream_response(b"truncat", digest_of=b"truncated")])
        with pytest.raises(IntegrityError):
            client.download_bitstream("a" * 32)  # only an id: the header alone is checked

    @pytest.mark.anyio
    async def test_async_client_checks_too(self):
        client, _, _ = make([bitstream_response(b"MLIC-other")], async_=True)
        with pytest.raises(IntegrityError):
            await client.download_bitstream(succeeded(b"MLIC-ok"))


class TestAsyncClient:
    @pytest.mark.anyio
    async def test_retries_429_honouring_retry_after_with_the_same_idempotency_key(self):
        client, seen, delays = make([
            httpx.Response(429, json=PROBLEM, headers={"Retry-After": "3"}),
            httpx.Response(202, json=JOB),
        ], async_=True)
        await client.encode(b"img", target_bpp=0.5, wait=False)
        assert len({r.headers["idempotency-key"] for r in seen}) == 1 and len(seen) == 2
        assert 3.0 <= delays[0] <= 3.3

    @pytest.mark.anyio
    async def test_retries_connection_errors_then_raises_typed(self):
        client, seen, _ = make([httpx.ConnectError("refused")] * 3, async_=True, max_retries=2)
        with pytest.raises(APIConnectionError):
            await client.get_job("x")
        assert len(seen) == 3

    @pytest.mark.anyio
    async def test_4xx_is_not_retried_and_typed(self):
        client, seen, _ = make([httpx.Response(404, json={"code": "job-not-found"})], async_=True)
        with pytest.raises(NotFoundError):
            await client.get_job("x")
        assert len(seen) == 1


def test_retry_after_http_date():
    response = httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert retry_after_seconds(response) == 0.0
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "12"})) == 12.0
    assert retry_after_seconds(httpx.Response(429)) is None


def test_sdk_does_not_import_torch_or_the_server():
    import subprocess
    import sys

    code = ("import sys, metalic_client, metalic_client.cli; "
            "bad = [m for m in ('torch', 'codec', 'service', 'worker', 'fastapi', 'rq') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    from pathlib import Path

    client_dir = Path(__file__).resolve().parents[2] / "client"
    result = subprocess.run([sys.executable, "-c", code], cwd=client_dir, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def anyio_backend():
    return "asyncio"
