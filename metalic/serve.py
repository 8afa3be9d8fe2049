"""``metalic serve``: one command, a working service on one machine.

Without ``REDIS_URL`` it starts a private ``redis-server`` (loopback only,
protected mode, a fresh password, append-only with fsync on every write,
``maxmemory`` with ``noeviction``, data under ``--data-dir``), ``--workers``
``metalic worker`` processes that it restarts when one exits, and the API.
With ``REDIS_URL`` it starts only the API (workers run elsewhere). Without
``METALIC_API_KEYS`` it makes one key and prints it.

SIGINT or SIGTERM stops the API, lets each worker finish its job for up to
``--drain-timeout`` seconds, then stops Redis.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from metalic.supervisor import WorkerSupervisor
from service.redis_server import DEFAULT_MAXMEMORY, EmbeddedRedis

log = logging.getLogger("metalic.serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metalic serve", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--data-dir", type=Path, help="where the embedded Redis keeps its append-only file "
                        "(default: a new temporary directory)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes to keep running with embedded Redis")
    parser.add_argument("--gpus", default="", help="comma-separated CUDA device ids; worker i gets gpus[i %% n] "
                        "(default: every worker sees what the machine shows)")
    parser.add_argument("--drain-timeout", type=float, default=60.0,
                        help="seconds workers get to finish their jobs on shutdown (default 60)")
    parser.add_argument("--redis-maxmemory", default=DEFAULT_MAXMEMORY,
                        help=f"maxmemory of the embedded Redis (default {DEFAULT_MAXMEMORY})")
    return parser


def worker_command() -> list[str]:
    """The worker process ``serve`` starts: the same entry point as ``metalic worker``."""
    return [sys.executable, "-m", "worker"]


def worker_env(base: dict[str, str], gpus: list[str]):
    """The environment of worker ``i``: the service's, with one GPU of ``gpus`` when some are given."""
    def env(index: int) -> dict[str, str]:
        out = dict(base)
        if gpus:
            out["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
        return out

    return env


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s %(levelname)s %(message)s")
    env = os.environ
    if not env.get("METALIC_API_KEYS"):
        key = secrets.token_urlsafe(24)
        env["METALIC_API_KEYS"] = key
        print(f"metalic serve: no METALIC_API_KEYS set; this run's API key is: {key}", flush=True)

    redis_server = None
    supervisor = None
    if not (env.get("REDIS_URL") or env.get("METALIC_REDIS_URL")):
        if not EmbeddedRedis.available():
            print("metalic serve: REDIS_URL is not set and no redis-server binary was found; install Redis "
                  "(apt install redis-server) or point REDIS_URL at a server", file=sys.stderr)
            return 2
        data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="metalic-redis-"))
        redis_server = EmbeddedRedis(data_dir, password=secrets.token_urlsafe(24),
                                     maxmemory=args.redis_maxmemory).start()
        env["REDIS_URL"] = redis_server.url
        log.info("started redis-server on %s:%d (loopback, password, data in %s)", redis_server.host,
                 redis_server.port, data_dir)
        gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
        supervisor = WorkerSupervisor(worker_command(), args.workers, worker_env(dict(env), gpus),
                                      drain_timeout=args.drain_timeout).start()
    try:
        import uvicorn

        uvicorn.run("service.main:create_app", factory=True, host=args.host, port=args.port)
    finally:
        if supervisor:
            supervisor.stop()
        if redis_server:
            redis_server.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
