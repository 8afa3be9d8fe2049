"""``metalic serve``: one command, a working service on one machine.

Without ``REDIS_URL`` it starts a private ``redis-server`` (append-only, on a
free port, data under ``--data-dir``), one ``metalic worker`` process and the
API. With ``REDIS_URL`` it starts only the API (workers run elsewhere).
Without ``METALIC_API_KEYS`` it makes one key and prints it.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from service.redis_server import EmbeddedRedis

log = logging.getLogger("metalic.serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metalic serve", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--data-dir", type=Path, help="where the embedded Redis keeps its append-only file "
                        "(default: a new temporary directory)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes to start with embedded Redis")
    return parser


def worker_command() -> list[str]:
    """The worker process ``serve`` starts: the same entry point as ``metalic worker``."""
    return [sys.executable, "-m", "worker"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s %(levelname)s %(message)s")
    env = os.environ
    if not env.get("METALIC_API_KEYS"):
        key = secrets.token_urlsafe(24)
        env["METALIC_API_KEYS"] = key
        print(f"metalic serve: no METALIC_API_KEYS set; this run's API key is: {key}", flush=True)

    redis_server = None
    workers: list[subprocess.Popen] = []
    if not (env.get("REDIS_URL") or env.get("METALIC_REDIS_URL")):
        if not EmbeddedRedis.available():
            print("metalic serve: REDIS_URL is not set and no redis-server binary was found; install Redis "
                  "(apt install redis-server) or point REDIS_URL at a server", file=sys.stderr)
            return 2
        data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="metalic-redis-"))
        redis_server = EmbeddedRedis(data_dir).start()
        env["REDIS_URL"] = redis_server.url
        log.info("started redis-server on %s (data in %s)", redis_server.url, data_dir)
        for _ in range(max(args.workers, 0)):
            workers.append(subprocess.Popen(worker_command(), env=dict(env)))
    try:
        import uvicorn

        uvicorn.run("service.main:create_app", factory=True, host=args.host, port=args.port)
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in workers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if redis_server:
            redis_server.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
