"""A whole service of real processes on this machine, for the fault harness and the load benchmark.

::

    redis-server (AOF, fsync always, password) <── TcpProxy (cut, reset) <── uvicorn (the API)
                                                                       <── N x `metalic worker` (supervised)

Every process the service is made of talks to Redis through the proxy, so the
harness can reset all their connections at once; the harness itself reads
Redis directly. Workers run under :class:`~metalic.supervisor.WorkerSupervisor`,
as ``metalic serve`` runs them, and log to ``worker-{i}.log``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from metalic.proxy import TcpProxy
from metalic.ready import wait_ready, workers_at_least
from metalic.serve import worker_command
from metalic.supervisor import WorkerSupervisor
from service.redis_server import APPENDFSYNC, EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[1]
REDIS_PASSWORD = "local-stack-password"

FAST_FAILOVER = {
    "METALIC_JOB_MONITORING_INTERVAL": "1",
    "METALIC_HEARTBEAT_GRACE": "2",
    "METALIC_REAP_INTERVAL": "0.5",
    "METALIC_WORKER_TTL": "16",
    "METALIC_PROGRESS_INTERVAL": "0.2",
}
"""Seconds-scale leases (TTL 3 s) and reaping, so a short run sees faults recovered many times."""


class LocalStack:
    """Starts, faults and stops a service of real processes.

    Args:
        tmp: Path. Where Redis keeps its files and every process logs.
        workers: int. Worker processes.
        api_keys: str. ``METALIC_API_KEYS`` of the API.
        env: dict. Extra environment of the API and the workers.
    """

    def __init__(self, tmp: Path, workers: int, api_keys: str, env: dict[str, str] | None = None):
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.redis = EmbeddedRedis(self.tmp / "redis", appendonly=True, appendfsync=APPENDFSYNC,
                                   password=REDIS_PASSWORD)
        self.proxy: TcpProxy | None = None
        self.port = free_port()
        self.n_workers = workers
        self.api_keys = api_keys
        self.extra_env = env or {}
        self.api: subprocess.Popen | None = None
        self.supervisor: WorkerSupervisor | None = None
        self._peaks: dict[str, int] = {}
        self._sampling = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        extra = dict(self.extra_env)
        path = os.pathsep.join(p for p in (str(ROOT), extra.pop("PYTHONPATH", ""), env.get("PYTHONPATH", "")) if p)
        env.update({"REDIS_URL": self.proxy.url(REDIS_PASSWORD), "METALIC_API_KEYS": self.api_keys,
                    "METALIC_DEVICE": "cpu", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
                    "PYTHONPATH": path})
        env.update(extra)
        return env

    def start(self, timeout: float = 300.0) -> LocalStack:
        self.redis.start()
        self.proxy = TcpProxy(self.redis.host, self.redis.port)
        log = (self.tmp / "api.log").open("ab")
        self.api = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "service.main:create_app", "--host", "127.0.0.1",
             "--port", str(self.port)], cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.supervisor = WorkerSupervisor(worker_command(), self.n_workers, lambda i: self.env(),
                                           poll_interval=0.2, max_backoff=2.0, drain_timeout=20,
                                           log_dir=self.tmp).start()
        self.wait_ready(self.n_workers, timeout)
        threading.Thread(target=self._sample_rss, name="metalic-rss", daemon=True).start()
        return self

    def wait_ready(self, workers: int, timeout: float) -> None:
        def alive():
            if self.api.poll() is not None:
                raise RuntimeError(f"the API exited with {self.api.returncode}:\n{self.tail('api.log')}")

        wait_ready(self.url, timeout, workers_at_least(workers), alive,
                   lambda: f"{self.tail('api.log')}\n{self.tail('worker-0.log')}")

    # ---- faults -------------------------------------------------------------------
    def worker_pids(self) -> list[int]:
        return [pid for pid in self.supervisor.pids() if pid is not None]

    def signal_worker(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def restart_redis(self, down: float = 0.5) -> None:
        """SIGKILL Redis (no shutdown work at all) and start it again on its port from its AOF."""
        self.redis.kill()
        time.sleep(down)
        self.redis.start()

    # ---- measuring ------------------------------------------------------------------
    def processes(self) -> dict[str, int]:
        procs = {"redis": self.redis.process.pid, "api": self.api.pid}
        for i, pid in enumerate(self.supervisor.pids()):
            if pid is not None:
                procs[f"worker-{i}"] = pid
        return procs

    def _sample_rss(self) -> None:
        while not self._sampling.wait(0.25):
            for name, pid in self.processes().items():
                try:
                    rss = psutil.Process(pid).memory_info().rss
                except psutil.Error:
                    continue
                self._peaks[name] = max(self._peaks.get(name, 0), rss)

    def peak_rss_mib(self) -> dict[str, float]:
        return {name: round(rss / 2**20, 1) for name, rss in sorted(self._peaks.items())}

    def logs(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.tmp.glob("*.log")))

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.tmp / name
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        self._sampling.set()
        if self.supervisor is not None:
            for pid in self.worker_pids():
                self.signal_worker(pid, signal.SIGCONT)  # a stopped worker cannot drain
            self.supervisor.stop()
        if self.api is not None and self.api.poll() is None:
            self.api.terminate()
            try:
                self.api.wait(20)
            except subprocess.TimeoutExpired:
                self.api.kill()
        if self.proxy is not None:
            self.proxy.close()
        self.redis.stop()
