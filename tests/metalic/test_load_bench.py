"""The load benchmark, small and on the fake codec: overload is answered 429/503 with Retry-After,
never a 5xx or a timeout. The figures in docs/BENCHMARKS.md come from the real codec:
``python -m metalic.load_bench --clients 32 --seconds 60 --workers 2``.
"""

from __future__ import annotations

import pytest

from tests.support.redis import require_redis_server

pytestmark = pytest.mark.e2e

FAKE = {"METALIC_ENCODER_FACTORY": "fake_codec:Encoder", "METALIC_DECODER": "fake_codec:decode",
        "METALIC_PRELOAD_MODEL": "", "FAKE_STEP_SECONDS": "0.05"}


def test_overload_gets_retry_after_and_never_a_5xx_or_a_timeout(tmp_path):
    require_redis_server()
    from metalic.load_bench import run_load
    from tests.conftest import FAKE_CODEC_DIR

    env = {**FAKE, "PYTHONPATH": str(FAKE_CODEC_DIR),
           "METALIC_MAX_JOBS_IN_FLIGHT": "2", "METALIC_DECODE_CONCURRENCY": "1", "METALIC_DECODE_QUEUE": "0"}
    report = run_load(clients=12, seconds=12, workers=2, keys=2, timeout=20, tmp=tmp_path, env=env)
    print(report.summary())
    assert report.server_errors == 0 and report.timeouts == 0 and report.connection_errors == 0
    assert report.overload_without_retry_after == 0
    assert report.statuses.get("429", 0) > 0  # 12 clients on 2 keys of 2 jobs each: the quota was hit
    assert report.jobs_completed > 0 and report.decodes_completed > 0
    assert set(report.requests) == {"submit", "poll", "download", "decode"}
    assert {"api", "redis", "worker-0", "worker-1"} <= set(report.peak_rss_mib)
