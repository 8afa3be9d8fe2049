"""The fault harness: N encode jobs through a real service while its processes are killed, paused and cut.

::

    python -m metalic.fault_harness --jobs 24 --workers 3 --json results/faults.json

It starts a :class:`~metalic.stack.LocalStack` (redis-server, uvicorn, several
``metalic worker`` processes, the real codec), submits ``--jobs`` images with
the SDK over ``--submit-seconds`` while a fault thread, every
``--fault-interval`` seconds or so, does one of:

- ``kill``: SIGKILL a worker (the supervisor starts a new one);
- ``pause``: SIGSTOP a worker for up to three lease TTLs, then SIGCONT;
- ``redis-restart``: SIGKILL redis-server and start it again from its append-only file;
- ``drop``: reset every connection between the service and Redis at once.

Then it stops the faults, waits for every accepted job to end, and counts:

- ``accepted``: ``POST /encode`` answered 202 (after the SDK's retries);
- ``succeeded`` / ``failed`` (by ``error.type``);
- ``lost``: accepted but not ended within ``--drain-timeout``, or gone;
- ``duplicated``: a job with more than one committed outcome in the service's
  logs, a job created twice for one submission (idempotency), or a bitstream
  whose sha256 is not its outcome's (the SDK checks every download);
- the longest and median time from acceptance to the terminal state (server clocks).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import re
import signal
import statistics
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import redis
from PIL import Image

from metalic.stack import FAST_FAILOVER, REDIS_PASSWORD, LocalStack
from metalic_client import APIStatusError, Client, IntegrityError, Job, MetalicClientError

API_KEY = "harness:fault-harness-key"
FAULTS = ("kill", "pause", "redis-restart", "drop")
COMMIT_RE = re.compile(r"job ([0-9a-f]{32}): outcome \w+ committed by (execution \w+|the reaper)")


@dataclass
class FaultReport:
    jobs: int
    workers: int
    accepted: int = 0
    refused: int = 0
    resubmitted: int = 0
    succeeded: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    duplicated: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    max_seconds_to_terminal: float | None = None
    median_seconds_to_terminal: float | None = None
    attempts: dict[str, int] = field(default_factory=dict)
    worker_restarts: int = 0
    worker_exit_codes: dict[str, int] = field(default_factory=dict)
    wall_seconds: float = 0.0

    def summary(self) -> str:
        failed = sum(self.failed.values())
        return (f"accepted {self.accepted}  succeeded {self.succeeded}  failed {failed}  lost {self.lost}  "
                f"duplicated {self.duplicated}  refused {self.refused} (resubmitted {self.resubmitted})  longest to terminal {self.max_seconds_to_terminal}s  "
                f"faults {dict(self.faults)}")


def harness_image(i: int, rng: random.Random) -> bytes:
    width, height = rng.choice([48, 64, 80, 96]), rng.choice([48, 64, 80])
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([128 + 90 * np.sin(xx / 7 + i), 128 + 80 * np.cos((xx + yy) / 13), (xx * 3 + yy * 2) % 256], -1)
    rgb = np.clip(rgb + np.random.default_rng(i).normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


class FaultThread(threading.Thread):
    """Injects one fault every ``interval`` seconds (jittered) until stopped.

    Faults come in rounds: each round is the four kinds in a random order, so a
    short run still sees every kind.
    """

    def __init__(self, stack: LocalStack, interval: float, rng: random.Random, lease_ttl: float):
        super().__init__(name="metalic-faults", daemon=True)
        self.stack, self.interval, self.rng, self.lease_ttl = stack, interval, rng, lease_ttl
        self.counts: Counter = Counter()
        self.stopped = threading.Event()
        self.resumes: list[threading.Timer] = []

    def finish(self) -> None:
        """Stop injecting; every paused worker is resumed now."""
        self.stopped.set()
        self.join()
        for timer in self.resumes:
            timer.cancel()
            timer.function(*timer.args)

    def run(self) -> None:
        plan: list[str] = []
        while not self.stopped.wait(self.rng.uniform(0.5, 1.5) * self.interval):
            if not plan:
                plan = self.rng.sample(FAULTS, len(FAULTS))
            fault = plan.pop()
            pids = self.stack.worker_pids()
            if fault in ("kill", "pause") and not pids:
                continue
            if fault == "kill":
                self.stack.signal_worker(self.rng.choice(pids), signal.SIGKILL)
            elif fault == "pause":
                pid = self.rng.choice(pids)
                self.stack.signal_worker(pid, signal.SIGSTOP)
                resume = threading.Timer(self.rng.uniform(0.3, 3.0) * self.lease_ttl, self.stack.signal_worker,
                                         args=(pid, signal.SIGCONT))
                resume.daemon = True
                resume.start()
                self.resumes.append(resume)
            elif fault == "redis-restart":
                self.stack.restart_redis(down=self.rng.uniform(0.2, 1.5))
            else:
                self.stack.proxy.drop()
            self.counts[fault] += 1


SUBMIT_PATIENCE = 90.0


def run_faults(jobs: int = 24, workers: int = 3, submit_seconds: float = 20.0, fault_interval: float = 2.0,
               drain_timeout: float = 180.0, seed: int = 0, tmp: Path | None = None,
               preset: str = "fast") -> FaultReport:
    """Run the harness once; see the module docstring. Returns the counts."""
    rng = random.Random(seed)
    tmp = Path(tmp or tempfile.mkdtemp(prefix="metalic-faults-"))
    env = {**FAST_FAILOVER, "METALIC_JOB_TIMEOUT": "120", "METALIC_JOB_RETRIES": "3",
           "METALIC_MAX_JOBS_IN_FLIGHT": str(jobs), "METALIC_RATE_LIMIT": "0"}
    lease_ttl = int(env["METALIC_JOB_MONITORING_INTERVAL"]) + int(env["METALIC_HEARTBEAT_GRACE"])
    stack = LocalStack(tmp, workers, API_KEY, env).start()
    report = FaultReport(jobs=jobs, workers=workers)
    started = time.monotonic()
    faults = FaultThread(stack, fault_interval, rng, lease_ttl)
    accepted: dict[int, Job] = {}
    try:
        faults.start()
        images = [harness_image(i, rng) for i in range(jobs)]
        t0 = time.monotonic()

        def submit(i: int) -> None:
            # Submissions spread evenly over submit_seconds, whatever the earlier ones took.
            time.sleep(max(0.0, t0 + submit_seconds * i / max(jobs, 1) - time.monotonic()))
            # A client that sees only 503s (Redis restarting) and 429s (busy) for all its retries
            # submits again under the same idempotency key, as a caller would; only a submission
            # still refused after SUBMIT_PATIENCE counts as refused.
            give_up = time.monotonic() + SUBMIT_PATIENCE
            with Client(stack.url, API_KEY.split(":", 1)[1], max_retries=12, timeout=15) as client:
                while True:
                    try:
                        accepted[i] = client.encode(images[i], target_bpp=0.5, preset=preset, wait=False,
                                                    idempotency_key=f"harness-{seed}-{i}")
                        return
                    except MetalicClientError as e:
                        transient = not isinstance(e, APIStatusError) or e.status in (429, 503)
                        if not transient or time.monotonic() > give_up:
                            report.refused += 1
                            return
                        report.resubmitted += 1

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(submit, range(jobs)))
        faults.finish()
        report.faults = dict(faults.counts)
        report.accepted = len(accepted)
        _collect(stack, accepted, drain_timeout, report)
    finally:
        report.wall_seconds = round(time.monotonic() - started, 1)
        faults.stopped.set()
        if stack.supervisor is not None:
            slots = stack.supervisor.slots
            report.worker_restarts = sum(slot.restarts for slot in slots)
            report.worker_exit_codes = dict(Counter(str(c) for slot in slots for c in slot.exit_codes))
        stack.stop()
    return report


def _collect(stack: LocalStack, accepted: dict[int, Job], drain_timeout: float, report: FaultReport) -> None:
    key = API_KEY.split(":", 1)[1]
    deadline = time.monotonic() + drain_timeout
    final: dict[str, Job] = {}
    with Client(stack.url, key, max_retries=8) as client:
        pending = {job.id for job in accepted.values()}
        while pending and time.monotonic() < deadline:
            for job_id in list(pending):
                try:
                    job = client.get_job(job_id)
                except MetalicClientError:
                    continue
                if job.status.is_terminal:
                    final[job_id] = job
                    pending.discard(job_id)
            time.sleep(0.5)
        report.lost = len(pending)
        seconds, failed, attempts = [], Counter(), Counter()
        for job in final.values():
            seconds.append((job.ended_at - job.created_at).total_seconds())
            attempts[str(job.attempts)] += 1
            if job.status.value == "succeeded":
                try:
                    client.download_bitstream(job)
                    report.succeeded += 1
                except IntegrityError:
                    report.duplicated += 1  # bytes other than the ones the outcome names
                except MetalicClientError:
                    report.lost += 1
            else:
                failed[job.error.type if job.error else job.status.value] += 1
        report.failed, report.attempts = dict(failed), dict(attempts)
        if seconds:
            report.max_seconds_to_terminal = round(max(seconds), 2)
            report.median_seconds_to_terminal = round(statistics.median(seconds), 2)
    commits = Counter(job_id for job_id, _ in COMMIT_RE.findall(stack.logs()))
    report.duplicated += sum(1 for job_id in final if commits[job_id] > 1)
    direct = redis.Redis(host=stack.redis.host, port=stack.redis.port, password=REDIS_PASSWORD)
    jobs_in_redis = {k.decode().rsplit(":", 1)[1] for k in direct.keys("rq:job:*") if len(k) == 39}
    report.duplicated += len(jobs_in_redis - {job.id for job in accepted.values()})  # one submission, two jobs
    direct.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metalic.fault_harness", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--submit-seconds", type=float, default=20.0)
    parser.add_argument("--fault-interval", type=float, default=2.0)
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    report = run_faults(args.jobs, args.workers, args.submit_seconds, args.fault_interval, args.drain_timeout,
                        args.seed, preset=args.preset)
    print(report.summary())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 0 if report.lost == 0 and report.duplicated == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
