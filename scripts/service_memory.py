"""Peak memory of the service: the API taking the largest upload, a worker encoding the largest image.

Starts a private redis-server, the API (the same uvicorn command as
docker-compose.yml) and one ``metalic worker --burst`` as separate processes,
then reports each process's peak resident set size (``VmHWM`` from /proc for
the API, ``ru_maxrss`` from wait4 for the worker)::

    python scripts/service_memory.py                       # defaults: the service's limits, preset max
    python scripts/service_memory.py --max-pixels 1048576 --preset fast --json out.json

The worker part can take very long on a CPU with ``--preset max`` at the full
pixel limit (16.7 MP); ``--refine-steps`` caps the refinement to measure memory
without waiting for the full encode. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codec.constants import DEFAULT_MAX_PIXELS  # noqa: E402
from metalic.ready import wait_ready  # noqa: E402
from service.redis_server import EmbeddedRedis, free_port  # noqa: E402

API_KEY = "bench-key"
API_COMMAND = ["uvicorn", "--factory", "service.main:create_app", "--host", "127.0.0.1"]


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size of a live process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("VmHWM not found")


def largest_upload(max_bytes: int, max_pixels: int) -> bytes:
    """A valid PNG just under ``max_bytes``: noise, so it does not compress."""
    side = int(math.sqrt(min(max_bytes * 0.97 / 3, max_pixels)))
    while True:
        rgb = np.random.RandomState(0).randint(0, 256, (side, side, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
        if buffer.tell() <= max_bytes:
            return buffer.getvalue()
        side = int(side * 0.98)


def largest_image(max_pixels: int, max_bytes: int) -> tuple[bytes, tuple[int, int]]:
    """A smooth PNG with the most pixels allowed (compresses well, so it fits the byte limit)."""
    width = min(4096 * 4, int(math.sqrt(max_pixels)))
    height = max_pixels // width
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([128 + 100 * np.sin(x / 57), 128 + 100 * np.cos(y / 43), 128 + 60 * np.sin((x + y) / 91)], -1)
    buffer = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buffer, format="PNG", optimize=True)
    if buffer.tell() > max_bytes:
        raise SystemExit(f"a {width}x{height} image is {buffer.tell()} bytes, over the upload limit {max_bytes}")
    return buffer.getvalue(), (width, height)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-upload-bytes", type=int, default=32 * 1024 * 1024)
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    parser.add_argument("--preset", default="max", choices=["fast", "balanced", "max"])
    parser.add_argument("--refine-steps", type=int, help="cap refinement steps (memory, not quality, is measured)")
    parser.add_argument("--skip-worker", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="metalic-bench-"))
    redis = EmbeddedRedis(tmp / "redis", appendonly=False).start()
    port = free_port()
    env = dict(os.environ, REDIS_URL=redis.url, METALIC_API_KEYS=API_KEY,
               METALIC_MAX_UPLOAD_BYTES=str(args.max_upload_bytes), METALIC_MAX_PIXELS=str(args.max_pixels),
               METALIC_JOB_TIMEOUT=str(24 * 3600), PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    results: dict = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
                     "max_upload_bytes": args.max_upload_bytes, "max_pixels": args.max_pixels}
    api = subprocess.Popen([sys.executable, "-m", *API_COMMAND, "--port", str(port)], cwd=ROOT, env=env,
                           stdout=(tmp / "api.log").open("w"), stderr=subprocess.STDOUT)
    worker = None
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, 300, lambda body: body.get("model_loaded") is True)
        results["api_idle_peak_rss_mib"] = vm_hwm_kib(api.pid) / 1024
        headers = {"Authorization": f"Bearer {API_KEY}"}

        upload = largest_upload(args.max_upload_bytes, args.max_pixels)
        started = time.perf_counter()
        response = httpx.post(f"{base}/encode", files={"file": ("big.png", upload)}, data={"preset": "fast"},
                              headers=headers, timeout=600)
        results["api_upload_bytes"] = len(upload)
        results["api_upload_status"] = response.status_code
        results["api_upload_seconds"] = time.perf_counter() - started
        results["api_upload_peak_rss_mib"] = vm_hwm_kib(api.pid) / 1024
        if response.status_code == 202:
            httpx.delete(f"{base}{response.headers['location']}", headers=headers)

        if not args.skip_worker:
            image, (width, height) = largest_image(args.max_pixels, args.max_upload_bytes)
            form = {"preset": args.preset, "target_bpp": "0.5"}
            if args.refine_steps is not None:
                form["refine_steps"] = str(args.refine_steps)
            response = httpx.post(f"{base}/encode", files={"file": ("large.png", image)}, data=form,
                                  headers=headers, timeout=600)
            response.raise_for_status()
            job_url = base + response.headers["location"]
            started = time.perf_counter()
            worker = subprocess.Popen([sys.executable, "-m", "worker", "--burst"], cwd=ROOT, env=env,
                                      stdout=(tmp / "worker.log").open("w"), stderr=subprocess.STDOUT)
            _, status, rusage = os.wait4(worker.pid, 0)
            worker.returncode = os.waitstatus_to_exitcode(status)
            job = httpx.get(job_url, headers=headers).json()
            results.update({
                "worker_image": f"{width}x{height}", "worker_preset": args.preset,
                "worker_refine_steps": args.refine_steps, "worker_job_status": job["status"],
                "worker_error": job.get("error"), "worker_seconds": time.perf_counter() - started,
                "worker_peak_rss_mib": rusage.ru_maxrss / 1024,
            })
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        api.terminate()
        api.wait(30)
        redis.stop()

    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value:.1f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
