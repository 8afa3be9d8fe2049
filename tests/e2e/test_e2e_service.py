"""End to end with real processes: redis-server, uvicorn, two ``metalic worker``s, the SDK.

Uses the real codec (``preset=fast`` on small images); ``METALIC_E2E_CODEC=fake``
swaps in tests/e2e/fake_codec.py for development of the service alone.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from e2e_helpers import API_KEY, OTHER_KEY, ROOT, use_fake_codec
from metalic_client import (AsyncClient, Client, JobStatus, NotFoundError, PayloadTooLargeError,
                            UnprocessableEntityError)
from PIL import Image

from tests.support.redis import require_redis_server
from tests.support.threads import torch_threads

SIZES = [(64, 64), (96, 64), (64, 96), (128, 96), (80, 72), (112, 80)]


def photo(width: int, height: int, seed: int) -> bytes:
    """A smooth synthetic image (gradients plus a little noise), PNG-encoded."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height) + 64], -1)
    rgb = np.clip(rgb + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def local_decode(bitstream: bytes) -> np.ndarray:
    if use_fake_codec():
        import fake_codec

        return np.asarray(fake_codec.decode(bitstream).image.convert("RGB"))
    from codec.pipeline import decode

    with torch_threads():  # as the API process decodes
        return np.asarray(decode(bitstream, device="cpu").image.convert("RGB"))


def test_six_concurrent_encodes_round_trip(stack_factory):
    stack = stack_factory(workers=2)
    images = [photo(w, h, i) for i, (w, h) in enumerate(SIZES)]
    progress: dict[str, list] = {}

    async def run():
        async with AsyncClient(stack.url, API_KEY, max_retries=6) as client:
            async def one(i, data):
                def on_progress(job):
                    progress.setdefault(job.id, []).append((job.status, job.progress))

                return await client.encode(data, target_bpp=0.5, preset="fast", on_progress=on_progress,
                                           poll_interval=0.1, wait_timeout=240)

            jobs = await asyncio.gather(*(one(i, data) for i, data in enumerate(images)))
            bitstreams = await asyncio.gather(*(client.download_bitstream(job) for job in jobs))
            pngs = await asyncio.gather(*(client.decode(b) for b in bitstreams))
            return jobs, bitstreams, pngs

    jobs, bitstreams, pngs = asyncio.run(run())
    assert [job.status for job in jobs] == [JobStatus.SUCCEEDED] * 6
    assert len({job.id for job in jobs}) == 6
    # Progress was watched: every job was seen running with a stage.
    running = [p for seen in progress.values() for status, p in seen if status is JobStatus.RUNNING and p]
    assert running and all(p.stage for p in running)
    assert {job.attempts for job in jobs} == {1}
    for job, (w, h), bitstream, png in zip(jobs, SIZES, bitstreams, pngs):
        assert len(bitstream) == job.result.bytes
        assert job.result.metadata["width"] == w and job.result.metadata["height"] == h
        remote = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        assert remote.shape == (h, w, 3)
        assert np.array_equal(remote, local_decode(bitstream))
    # Jobs are private to their key.
    with Client(stack.url, OTHER_KEY) as other, pytest.raises(NotFoundError):
        other.get_job(jobs[0].id)


def test_cli_encode_and_decode(stack_factory, tmp_path):
    stack = stack_factory(workers=1)
    image = tmp_path / "in.png"
    image.write_bytes(photo(64, 48, 7))
    env = {"METALIC_URL": stack.url, "METALIC_API_KEY": API_KEY, "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(ROOT / "client")}
    out = tmp_path / "out.mlic"
    cli = [sys.executable, "-m", "metalic_client.cli"]
    encoded = subprocess.run([*cli, "encode", str(image), "--bpp", "0.25", "--preset", "fast", "-o", str(out)],
                             env=env, capture_output=True, text=True, timeout=240)
    assert encoded.returncode == 0, encoded.stderr
    assert out.stat().st_size > 0 and "bpp" in encoded.stdout
    assert "[" in encoded.stderr  # the progress bar
    decoded = subprocess.run([*cli, "decode", str(out), "-o", str(tmp_path / "out.png")], env=env,
                             capture_output=True, text=True, timeout=120)
    assert decoded.returncode == 0, decoded.stderr
    assert Image.open(tmp_path / "out.png").size == (64, 48)
    bad = subprocess.run([*cli, "decode", str(image)], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "invalid-bitstream" in bad.stderr


def test_tiny_images_encode_and_what_a_worker_refuses_is_refused_at_submit(stack_factory):
    # the API and the worker read one METALIC_MAX_PIXELS; a 1x1 or 2x3 image at 0.5 bpp used to be
    # accepted with 202 and then fail in the worker (math domain error in the rate control)
    stack = stack_factory(workers=1, extra_env={"METALIC_MAX_PIXELS": "4096"})
    with Client(stack.url, API_KEY) as client:
        for w, h in ((1, 1), (2, 3), (64, 64)):
            job = client.encode(photo(w, h, w), target_bpp=0.5, preset="balanced", refine_steps=8, lambda_steps=2,
                                poll_interval=0.1, wait_timeout=240)
            meta = job.result.metadata
            assert job.status is JobStatus.SUCCEEDED and (meta["width"], meta["height"]) == (w, h)
            assert meta["target_reached"] or any("out of reach" in n for n in meta["warnings"])
            assert w * h == 4096 or meta["target_reached"] is False  # the header alone is hundreds of bpp
            assert local_decode(client.download_bitstream(job)).shape == (h, w, 3)
        with pytest.raises(PayloadTooLargeError) as too_large:
            client.encode(photo(65, 64, 0), target_bpp=0.5, wait=False)
        assert too_large.value.code == "image-too-large"
        with pytest.raises(UnprocessableEntityError) as other_model:
            client.encode(photo(8, 8, 0), target_bpp=0.5, model="bmshj2018-factorized", wait=False)
        assert other_model.value.code == "invalid-options"


def wait_for(predicate, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not met")


def test_sigkilled_worker_job_is_retried_on_the_other_worker(stack_factory):
    stack = stack_factory(workers=2, extra_env={"FAKE_STEP_SECONDS": "0.3"})
    with Client(stack.url, API_KEY) as client:
        # A bigger image for the victim, so it is surely mid-job when the signal lands.
        victim = client.encode(photo(384, 256, 1), target_bpp=0.5, preset="fast", wait=False)
        others = [client.encode(photo(64, 64, i), target_bpp=0.5, preset="fast", wait=False) for i in range(2, 5)]

        def running_with_worker():
            job = client.get_job(victim)
            return job if job.status is JobStatus.RUNNING and job.progress and job.progress.step else None

        running = wait_for(running_with_worker, timeout=120)
        raw = httpx.get(f"{stack.url}/jobs/{victim.id}", headers={"Authorization": f"Bearer {API_KEY}"}).json()
        assert raw["attempts"] == 1
        worker_name = stack_worker_of(stack, victim.id)
        stack.kill(worker_name)  # SIGKILL: no cleanup, no failure handler, nothing
        started = time.monotonic()
        done = client.wait(victim, poll_interval=0.2, timeout=180)
        elapsed = time.monotonic() - started
        assert done.status is JobStatus.SUCCEEDED
        assert done.attempts == 2
        assert running.status is JobStatus.RUNNING
        # Detection is bounded: heartbeat interval + grace + maintenance interval, plus the re-run.
        assert elapsed < 150
        for job in others:
            assert client.wait(job, poll_interval=0.2, timeout=180).status is JobStatus.SUCCEEDED
        assert client.download_bitstream(done)


def stack_worker_of(stack, job_id: str) -> str:
    """Name of the worker process running ``job_id`` (RQ records the worker name on the job)."""
    import redis
    from rq.job import Job

    conn = redis.Redis.from_url(stack.redis.url)
    name = Job.fetch(job_id, connection=conn, serializer="json").worker_name
    conn.close()
    for proc_name in stack.procs:
        if name == proc_name or name.startswith(f"{proc_name}-"):
            return proc_name
    raise AssertionError(f"job {job_id} runs on unknown worker {name!r}")


def test_jobs_queued_across_a_redis_restart_all_finish(stack_factory):
    stack = stack_factory(workers=1)
    with Client(stack.url, API_KEY, max_retries=8) as client:
        jobs = [client.encode(photo(64 + 16 * i, 64, i), target_bpp=0.5, preset="fast", wait=False) for i in range(5)]
        stack.redis.kill()  # SIGKILL: appendfsync always means every acknowledged write is on disk
        time.sleep(1.0)
        stack.redis.start()
        finished = [client.wait(job, poll_interval=0.3, timeout=240) for job in jobs]
    assert [job.status for job in finished] == [JobStatus.SUCCEEDED] * 5


def test_metalic_serve_starts_redis_api_and_a_worker(tmp_path):
    """``metalic serve`` without REDIS_URL: one command, a working service, whose Redis wants a password
    and whose worker comes back when it is killed."""
    import os
    import signal

    import psutil
    import redis
    from e2e_helpers import E2E_DIR
    from service.redis_server import free_port

    require_redis_server()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "METALIC_REDIS_URL", "METALIC_API_KEYS")}
    env.update({"PYTHONPATH": os.pathsep.join([str(ROOT), str(E2E_DIR)]), "PYTHONWARNINGS": "ignore",
                "METALIC_DEVICE": "cpu", "OMP_NUM_THREADS": "1"})
    if use_fake_codec():
        env.update({"METALIC_ENCODER_FACTORY": "fake_codec:Encoder", "METALIC_DECODER": "fake_codec:decode"})
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "metalic", "serve", "--port", str(port), "--data-dir", str(tmp_path / "r")],
                            cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        key = None
        while time.monotonic() < deadline:
            text = log.read_text()
            if key is None and "API key is: " in text:
                key = text.split("API key is: ", 1)[1].split()[0]
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200 and key:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, log.read_text()
            time.sleep(0.3)
        else:
            raise AssertionError(log.read_text())
        with Client(url, key) as client:
            job = client.encode(photo(64, 64, 3), target_bpp=0.5, preset="fast", wait_timeout=120)
            assert job.status is JobStatus.SUCCEEDED
            children = psutil.Process(proc.pid).children()
            redis_proc = next(c for c in children if "redis-server" in c.name())
            port = next(c.laddr.port for c in redis_proc.net_connections() if c.status == psutil.CONN_LISTEN)
            with pytest.raises(redis.AuthenticationError):
                redis.Redis(host="127.0.0.1", port=port).ping()
            worker = next(c for c in children if c.cmdline()[-2:] == ["-m", "worker"])
            worker.kill()  # the OOM killer, say
            worker.wait(10)

            def restarted():
                fresh = [c for c in psutil.Process(proc.pid).children() if c.cmdline()[-2:] == ["-m", "worker"]]
                return fresh and fresh[0].pid != worker.pid and httpx.get(f"{url}/readyz", timeout=2).status_code == 200

            deadline = time.monotonic() + 180
            while not restarted():
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
            again = client.encode(photo(48, 64, 4), target_bpp=0.5, preset="fast", wait_timeout=120)
            assert again.status is JobStatus.SUCCEEDED
            assert client.download_bitstream(again)  # checked against the job's sha256
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert (tmp_path / "r" / "appendonlydir").exists() or any((tmp_path / "r").iterdir())
