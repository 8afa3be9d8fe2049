"""Real processes for the end-to-end tests: redis-server, uvicorn with the app, ``metalic worker``s.

The commands are the ones docker/ and docker-compose.yml run (checked by
tests/e2e/test_deploy_files.py): :data:`API_COMMAND` and :data:`WORKER_COMMAND`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from metalic.ready import wait_ready, workers_at_least
from service.redis_server import APPENDFSYNC, EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[2]
E2E_DIR = Path(__file__).resolve().parent

API_COMMAND = ["uvicorn", "--factory", "service.main:create_app", "--host", "0.0.0.0", "--port", "8000"]
"""The API process, as the Dockerfiles and docker-compose.yml run it."""

WORKER_COMMAND = ["metalic", "worker"]
"""The worker process, as docker-compose.yml runs it."""

API_KEY = "e2e-key-1"
OTHER_KEY = "e2e-key-2"


def use_fake_codec() -> bool:
    """``METALIC_E2E_CODEC=fake`` swaps the real codec for tests/e2e/fake_codec.py (development only)."""
    return os.environ.get("METALIC_E2E_CODEC", "real") == "fake"


def api_argv(port: int) -> list[str]:
    argv = list(API_COMMAND)
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    return [sys.executable, "-m", *argv]


def metalic_executable() -> str:
    """The ``metalic`` console script of the Python running the tests (a venv's own before PATH's)."""
    exe = shutil.which("metalic", path=str(Path(sys.executable).parent)) or shutil.which("metalic")
    if exe is None:
        raise RuntimeError("the metalic console script is not installed (pip install -e .)")
    return exe


def worker_argv(name: str) -> list[str]:
    """``metalic worker``, as docker-compose.yml runs it."""
    return [metalic_executable(), *WORKER_COMMAND[1:], "--name", name]


REDIS_PASSWORD = "e2e-redis-password"


class Stack:
    """redis-server (AOF with the deployed fsync policy, a password) + uvicorn + N workers, each logging to a file."""

    def __init__(self, tmp: Path, workers: int = 2, extra_env: dict[str, str] | None = None):
        self.tmp = tmp
        self.redis = EmbeddedRedis(tmp / "redis", appendonly=True, appendfsync=APPENDFSYNC, password=REDIS_PASSWORD)
        self.port = free_port()
        self.n_workers = workers
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.extra_env = extra_env or {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "REDIS_URL": self.redis.url,
            "METALIC_API_KEYS": f"{API_KEY},{OTHER_KEY}",
            "METALIC_JOB_MONITORING_INTERVAL": "1",
            "METALIC_HEARTBEAT_GRACE": "3",
            "METALIC_MAINTENANCE_INTERVAL": "1",
            "METALIC_WORKER_TTL": "16",
            "METALIC_PROGRESS_INTERVAL": "0.1",
            "METALIC_MAX_JOBS_IN_FLIGHT": "16",
            "METALIC_DEVICE": "cpu",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(E2E_DIR), env.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1",
            "PYTHONWARNINGS": "ignore",
        })
        if use_fake_codec():
            env["METALIC_ENCODER_FACTORY"] = "fake_codec:Encoder"
            env["METALIC_DECODER"] = "fake_codec:decode"
            env.setdefault("FAKE_STEP_SECONDS", "0.1")
        env.update(self.extra_env)
        return env

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = self.tmp / f"{name}.log"
        self.logs[name] = log
        proc = subprocess.Popen(argv, cwd=ROOT, env=self.env(), stdout=log.open("ab"), stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def start(self) -> Stack:
        self.redis.start()
        self._spawn("api", api_argv(self.port))
        for i in range(self.n_workers):
            self.start_worker(f"worker-{i}")
        self.wait_ready(workers=self.n_workers)
        return self

    def start_worker(self, name: str) -> subprocess.Popen:
        return self._spawn(name, worker_argv(name))

    def wait_ready(self, workers: int, timeout: float = 180.0) -> None:
        def alive():
            for name, proc in self.procs.items():
                if proc.poll() is not None and (name == "api" or proc.returncode not in (0, -9)):
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

        wait_ready(self.url, timeout, workers_at_least(workers), alive,
                   lambda: "\n".join(self.tail(n) for n in self.procs))

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        proc.send_signal(sig)
        proc.wait(timeout=30)

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.logs.get(name)
        if not path or not path.exists():
            return ""
        text = path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {name} ---\n" + "\n".join(text)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.redis.stop()
