"""``python -m worker.health``: exit 0 if a worker on this host is registered and beating.

The container health check of docker-compose.yml: a worker registers only
after its model is loaded, and its heartbeat stops if it hangs or dies.
"""

from __future__ import annotations

import socket
import sys
from datetime import datetime, timezone

import redis
from rq.worker import Worker

from worker.config import WorkerSettings


def main() -> int:
    settings = WorkerSettings()
    try:
        connection = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=3)
        workers = Worker.all(connection=connection)
    except redis.RedisError as exc:
        print(f"unhealthy: redis: {exc}", file=sys.stderr)
        return 1
    host = socket.gethostname()
    now = datetime.now(timezone.utc)
    for worker in workers:
        beat = worker.last_heartbeat
        if worker.hostname == host and beat is not None:
            age = (now - beat.replace(tzinfo=beat.tzinfo or timezone.utc)).total_seconds()
            if age < settings.worker_ttl + 60:
                return 0
    print(f"unhealthy: no live worker registered from {host}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
