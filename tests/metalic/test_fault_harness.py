"""The fault harness, short: real redis-server, uvicorn, three ``metalic worker``s and the real codec,
while workers are SIGKILLed and SIGSTOPped, Redis is restarted and every connection is reset.

The longer run whose figures are in docs/BENCHMARKS.md is the same function with more jobs:
``python -m metalic.fault_harness --jobs 120 --workers 4 --submit-seconds 240``.
"""

from __future__ import annotations

import pytest

from tests.support.redis import require_redis_server

pytestmark = pytest.mark.e2e


def test_no_job_is_lost_or_duplicated_under_faults(tmp_path):
    require_redis_server()
    from metalic.fault_harness import run_faults

    report = run_faults(jobs=10, workers=3, submit_seconds=15, fault_interval=1.5, drain_timeout=150, seed=1,
                        tmp=tmp_path)
    print(report.summary())
    assert report.accepted == 10 and report.refused == 0
    assert report.lost == 0
    assert report.duplicated == 0
    assert report.succeeded + sum(report.failed.values()) == report.accepted
    assert set(report.failed) <= {"worker-lost"}  # no job fails for a reason of its own; faults only cost retries
    assert set(report.faults) == {"kill", "pause", "redis-restart", "drop"}
    # Each job ends within its attempts' bound even while workers die and restart.
    assert report.max_seconds_to_terminal is not None and report.max_seconds_to_terminal < 150
