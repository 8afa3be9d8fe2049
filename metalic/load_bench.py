"""Load on one machine's service: many concurrent clients submit, poll, download and decode.

::

    python -m metalic.load_bench --clients 32 --seconds 60 --workers 2 --json results/load.json

Starts a :class:`~metalic.stack.LocalStack` (redis-server, uvicorn, workers with
the real codec) and runs ``--clients`` asyncio clients over raw HTTP (not the
SDK, whose retries would hide what the service answers). Each client loops:
``POST /encode`` a small image, ``GET /jobs/{id}`` until it ends, ``GET`` its
bitstream, ``POST /decode`` it. An answer 429 or 503 must carry ``Retry-After``;
the client waits that long and sends the request again. Clients share
``--keys`` API keys, so the per-key quota of jobs in flight is reached.

It reports, per request kind: count, p50, p95 and max latency; every status
code; 5xx answers; 429/503 answers without ``Retry-After``; timeouts (no answer
within ``--timeout``); and the peak RSS of every process of the service.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from metalic.fault_harness import harness_image
from metalic.stack import LocalStack

KINDS = ("submit", "poll", "download", "decode")


@dataclass
class LoadReport:
    clients: int
    seconds: float
    workers: int
    requests: dict[str, dict] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    server_errors: int = 0
    overload_without_retry_after: int = 0
    timeouts: int = 0
    connection_errors: int = 0
    jobs_completed: int = 0
    jobs_per_second: float = 0.0
    decodes_completed: int = 0
    peak_rss_mib: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        lat = "  ".join(f"{k} p50 {v['p50_ms']} ms p95 {v['p95_ms']} ms (n={v['count']})"
                        for k, v in self.requests.items())
        return (f"{self.clients} clients, {self.seconds:.0f}s: {self.jobs_completed} jobs, {self.decodes_completed} "
                f"decodes; 5xx {self.server_errors}, 429/503 without Retry-After {self.overload_without_retry_after}, "
                f"timeouts {self.timeouts}; statuses {self.statuses}\n{lat}\npeak RSS MiB {self.peak_rss_mib}")


class Recorder:
    def __init__(self):
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.statuses: Counter = Counter()
        self.server_errors = self.no_retry_after = self.timeouts = self.connection_errors = 0
        self.jobs = self.decodes = 0

    async def request(self, http: httpx.AsyncClient, kind: str, method: str, url: str, deadline: float,
                      **kwargs) -> httpx.Response | None:
        """Send until the answer is not 429/503 (honouring Retry-After) or the run ends."""
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                response = await http.request(method, url, **kwargs)
            except httpx.TimeoutException:
                self.timeouts += 1
                return None
            except httpx.TransportError:
                self.connection_errors += 1
                return None
            self.latency[kind].append(time.perf_counter() - started)
            self.statuses[str(response.status_code)] += 1
            if response.status_code >= 500 and response.status_code != 503:
                self.server_errors += 1
            if response.status_code in (429, 503):
                retry_after = response.headers.get("retry-after")
                if retry_after is None:
                    self.no_retry_after += 1
                    return None
                await asyncio.sleep(min(float(retry_after), 5.0) * random.uniform(0.5, 1.0))
                continue
            return response
        return None


async def client_loop(index: int, base: str, key: str, deadline: float, rec: Recorder, timeout: float,
                      poll_interval: float) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    rng = random.Random(index)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=timeout) as http:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            image = harness_image(index * 1000 + n, rng)
            submitted = await rec.request(http, "submit", "POST", "/encode", deadline,
                                          files={"file": ("i.png", image, "image/png")},
                                          data={"target_bpp": "0.5", "preset": "fast"})
            if submitted is None or submitted.status_code != 202:
                continue
            job_id = submitted.json()["id"]
            status = "queued"
            while status in ("queued", "running") and time.monotonic() < deadline:
                await asyncio.sleep(poll_interval)
                polled = await rec.request(http, "poll", "GET", f"/jobs/{job_id}", deadline)
                if polled is None:
                    break
                status = polled.json().get("status")
            if status != "succeeded":
                continue
            rec.jobs += 1
            bitstream = await rec.request(http, "download", "GET", f"/jobs/{job_id}/bitstream", deadline)
            if bitstream is None or bitstream.status_code != 200:
                continue
            decoded = await rec.request(http, "decode", "POST", "/decode", deadline,
                                        files={"file": ("b.mlic", bitstream.content)})
            if decoded is not None and decoded.status_code == 200:
                rec.decodes += 1


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_load(clients: int = 32, seconds: float = 60.0, workers: int = 2, keys: int = 4, timeout: float = 30.0,
             poll_interval: float = 0.25, tmp: Path | None = None, env: dict[str, str] | None = None) -> LoadReport:
    """Run the benchmark once; see the module docstring."""
    tmp = Path(tmp or tempfile.mkdtemp(prefix="metalic-load-"))
    api_keys = [f"load-key-{i}" for i in range(keys)]
    stack_env = {"METALIC_MAX_JOBS_IN_FLIGHT": "4", "METALIC_DECODE_CONCURRENCY": "2", "METALIC_DECODE_QUEUE": "4",
                 "METALIC_RATE_LIMIT": "6000", **(env or {})}
    stack = LocalStack(tmp, workers, ",".join(api_keys), stack_env).start()
    rec = Recorder()
    try:
        started = time.monotonic()
        deadline = started + seconds

        async def everyone():
            await asyncio.gather(*(client_loop(i, stack.url, api_keys[i % keys], deadline, rec, timeout,
                                               poll_interval) for i in range(clients)))

        asyncio.run(everyone())
        elapsed = time.monotonic() - started
    finally:
        peaks = stack.peak_rss_mib()
        stack.stop()
    report = LoadReport(clients=clients, seconds=round(elapsed, 1), workers=workers)
    for kind in KINDS:
        values = rec.latency.get(kind, [])
        if values:
            report.requests[kind] = {"count": len(values), "p50_ms": round(1000 * statistics.median(values), 1),
                                     "p95_ms": round(1000 * percentile(values, 0.95), 1),
                                     "max_ms": round(1000 * max(values), 1)}
    report.statuses = dict(sorted(rec.statuses.items()))
    report.server_errors = rec.server_errors
    report.overload_without_retry_after = rec.no_retry_after
    report.timeouts = rec.timeouts
    report.connection_errors = rec.connection_errors
    report.jobs_completed = rec.jobs
    report.jobs_per_second = round(rec.jobs / elapsed, 3)
    report.decodes_completed = rec.decodes
    report.peak_rss_mib = peaks
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metalic.load_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keys", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    report = run_load(args.clients, args.seconds, args.workers, args.keys, args.timeout)
    print(report.summary())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 0 if report.server_errors == report.timeouts == report.overload_without_retry_after == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
