"""The service half of ``metalic bench speed``: ``POST /decode`` requests per second and worker jobs per hour.

Both are measured on a :class:`~metalic.stack.LocalStack` of real processes
(redis-server, uvicorn with the app, ``metalic worker``s with the real codec):

* **requests per second**: ``clients`` threads send the bench's own Kodak
  streams to ``POST /decode`` in a closed loop for ``seconds``; decodes that
  answered 200 over the wall time. The API decodes ``decode_concurrency`` at
  a time (the settings' default unless ``env`` says otherwise).
* **jobs per hour**: ``jobs`` encode jobs (``preset``, 0.5 bpp, the bench's
  images in turn) are submitted one after the other and each is timed from
  ``POST /encode`` to ``succeeded`` as the client sees it (queueing, the
  encode, the check decode, storing). jobs/hour = 3600 / median job seconds
  x workers: one worker runs one job at a time, so that is what a queue that
  never empties gets from them (on a machine with a core per worker).
"""

from __future__ import annotations

import io
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

import httpx
import numpy as np
from PIL import Image

from metalic.stack import LocalStack

KEY = "speed-bench-key"


def measure_service(images: Sequence[np.ndarray], streams: Sequence[bytes], seconds: float = 10.0,
                    clients: int = 2, jobs: int = 3, workers: int = 1, preset: str = "fast",
                    tmp: Path | None = None, env: dict[str, str] | None = None) -> dict:
    """Starts the stack, measures both figures, stops it; see the module docstring."""
    if not streams or not images:
        raise ValueError("the service bench needs at least one image and its stream")
    tmp = Path(tmp or tempfile.mkdtemp(prefix="metalic-speed-"))
    stack = LocalStack(tmp, workers, KEY, env or {}).start()
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        with httpx.Client(base_url=stack.url, headers=headers, timeout=120) as http:
            answer = http.post("/decode", files={"file": ("b.mlic", streams[0])})  # warm-up, and a real check
            if answer.status_code != 200:
                raise RuntimeError(f"POST /decode answered {answer.status_code}: {answer.text[:200]}")
            job_seconds = [_one_job(http, images[i % len(images)], preset) for i in range(jobs)]
        rps = _decode_loop(stack.url, headers, streams, seconds, clients)
    finally:
        stack.stop()
    per_job = statistics.median(job_seconds) if job_seconds else None
    return {**rps, "clients": clients, "workers": workers, "preset": preset,
            "job_seconds": job_seconds, "median_job_s": per_job,
            "jobs_per_hour": 3600.0 / per_job * workers if per_job else None,
            "job_note": f"3600 / median of {len(job_seconds)} real '{preset}' jobs' submit-to-succeeded seconds "
                        f"x {workers} worker(s)"}


def _one_job(http: httpx.Client, img: np.ndarray, preset: str) -> float:
    buffer = io.BytesIO()
    Image.fromarray(img, "RGB").save(buffer, format="PNG")
    started = time.perf_counter()
    submitted = http.post("/encode", files={"file": ("i.png", buffer.getvalue(), "image/png")},
                          data={"target_bpp": "0.5", "preset": preset})
    if submitted.status_code != 202:
        raise RuntimeError(f"POST /encode answered {submitted.status_code}: {submitted.text[:200]}")
    job_id = submitted.json()["id"]
    while True:
        status = http.get(f"/jobs/{job_id}").json().get("status")
        if status == "succeeded":
            return time.perf_counter() - started
        if status not in ("queued", "running"):
            raise RuntimeError(f"encode job {job_id} ended {status}")
        time.sleep(0.05)


def _decode_loop(url: str, headers: dict, streams: Sequence[bytes], seconds: float, clients: int) -> dict:
    counts = [0] * clients
    other: list[int] = []
    deadline = time.monotonic() + seconds

    def client(i: int) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
            n = i
            while time.monotonic() < deadline:
                answer = http.post("/decode", files={"file": ("b.mlic", streams[n % len(streams)])})
                n += 1
                if answer.status_code == 200:
                    counts[i] += 1
                else:
                    other.append(answer.status_code)

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    return {"decodes": sum(counts), "seconds": elapsed, "decode_rps": sum(counts) / elapsed,
            "refused": len(other)}
