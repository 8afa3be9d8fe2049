"""The SDK against the real app in-process (fake codec, in-process burst worker)."""

from __future__ import annotations

import io

import httpx
import pytest
from fastapi.testclient import TestClient
from metalic_client import AsyncClient, Client, JobCanceledError, JobStatus, UnsupportedMediaTypeError
from PIL import Image
from rq import Queue

from service.config import Settings
from service.main import create_app
from worker import jobs as worker_jobs
from worker import protocol
from worker.main import EncodeWorker

KEY = "sdk-test-key"


def png(width=20, height=12) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def app(redis_url, fake_codec, monkeypatch):
    monkeypatch.setattr(worker_jobs, "_encoder", fake_codec.Encoder())
    return create_app(Settings(redis_url=redis_url, api_keys=[KEY]), codec=fake_codec.FakeCodec())


def drain(redis_conn):
    queue = Queue(protocol.DEFAULT_QUEUE, connection=redis_conn, serializer=protocol.SERIALIZER)
    EncodeWorker([queue], connection=redis_conn, serializer="json").work(burst=True, logging_level="WARNING")


class TestClientOnApp:
    def test_encode_wait_download_decode(self, app, redis_conn, fake_codec):
        with TestClient(app) as http, Client("http://testserver", KEY, http_client=http) as client:
            job = client.encode(png(), target_bpp=0.5, preset="fast", wait=False)
            drain(redis_conn)
            seen = []
            done = client.wait(job, on_progress=seen.append, poll_interval=0.01)
            assert done.status is JobStatus.SUCCEEDED and done.result.metadata["width"] == 20
            bitstream = client.download_bitstream(done)
            assert len(bitstream) == done.result.bytes
            decoded = Image.open(io.BytesIO(client.decode(bitstream)))
            assert decoded.size == (20, 12)

    def test_bad_upload_raises_typed_error(self, app):
        with TestClient(app) as http, Client("http://testserver", KEY, http_client=http) as client:
            with pytest.raises(UnsupportedMediaTypeError) as info:
                client.encode(b"GIF89a not supported", wait=False)
            assert info.value.code == "unsupported-media-type"

    def test_cancel_then_wait_raises_canceled(self, app):
        with TestClient(app) as http, Client("http://testserver", KEY, http_client=http) as client:
            job = client.encode(png(), wait=False)
            assert client.cancel(job).status is JobStatus.CANCELED
            with pytest.raises(JobCanceledError):
                client.wait(job, poll_interval=0.01)


class TestAsyncClientOnApp:
    @pytest.mark.anyio
    async def test_encode_wait_download_decode(self, app, redis_conn):
        transport = httpx.ASGITransport(app=app)
        async with AsyncClient("http://testserver", KEY, http_client=httpx.AsyncClient(transport=transport)) as client:
            job = await client.encode(png(), target_bpp=0.5, preset="fast", wait=False)
            drain(redis_conn)
            done = await client.wait(job, poll_interval=0.01)
            assert done.status is JobStatus.SUCCEEDED
            bitstream = await client.download_bitstream(done)
            decoded = Image.open(io.BytesIO(await client.decode(bitstream)))
            assert decoded.size == (20, 12)


@pytest.fixture
def anyio_backend():
    return "asyncio"
