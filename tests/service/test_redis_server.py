"""service.redis_server.EmbeddedRedis: the Redis ``metalic serve`` starts is locked down by default."""

from __future__ import annotations

import os
import stat

import pytest
import redis

from service.redis_server import APPENDFSYNC, EmbeddedRedis
from tests.support.redis import require_redis_server


@pytest.fixture
def server(tmp_path):
    require_redis_server()
    with EmbeddedRedis(tmp_path / "r", password="s3cret-pw", maxmemory="4mb") as server:
        yield server


class TestEmbeddedRedis:
    def test_clients_without_the_password_are_refused(self, server):
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=server.host, port=server.port).ping()
        assert redis.Redis.from_url(server.url).ping()

    def test_loopback_protected_mode_fsync_and_memory_limit(self, server):
        config = redis.Redis.from_url(server.url).config_get("*")
        assert config["bind"] == "127.0.0.1"
        assert config["protected-mode"] == "yes"
        assert config["appendonly"] == "yes" and config["appendfsync"] == APPENDFSYNC == "always"
        assert config["maxmemory-policy"] == "noeviction"
        assert int(config["maxmemory"]) == 4 * 1024 * 1024

    def test_the_password_is_in_a_private_file_not_on_the_command_line(self, server):
        cmdline = open(f"/proc/{server.process.pid}/cmdline", "rb").read()
        assert b"s3cret-pw" not in cmdline
        assert stat.S_IMODE(os.stat(server.config_file).st_mode) == 0o600

    def test_a_full_redis_refuses_writes_instead_of_evicting(self, server):
        client = redis.Redis.from_url(server.url)
        client.set("queued-job", b"keep me")
        with pytest.raises(redis.OutOfMemoryError):
            for i in range(200):
                client.set(f"filler:{i}", b"x" * 64 * 1024)
        assert client.get("queued-job") == b"keep me"
