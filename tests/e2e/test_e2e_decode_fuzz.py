"""Crafted containers through ``POST /decode`` on a real uvicorn with the real codec: 200 or a typed 4xx.

``METALIC_FUZZ_SERVICE_CASES`` (default 40) seeds of tests/support/crafted.py;
``python scripts/fuzz_decode.py`` sends the documented 500 (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import os

import pytest
from e2e_helpers import API_KEY, use_fake_codec

from tests.support.crafted import StreamForge, issue_11_stream, run_service_cases
from tests.support.threads import torch_threads

CASES = int(os.environ.get("METALIC_FUZZ_SERVICE_CASES", "40"))
API_RSS_LIMIT = 4 << 30
"""Bytes. Resident set size the API process may reach while it answers the cases."""


@pytest.mark.skipif(use_fake_codec(), reason="crafted containers are the real codec's format")
def test_crafted_streams_get_an_answer_and_never_take_the_api_down(stack_factory):
    stack = stack_factory(workers=0)
    with torch_threads():
        forge = StreamForge()
        report = run_service_cases(forge, range(CASES), stack.url, API_KEY, stack.procs["api"].pid, API_RSS_LIMIT)
    assert report.findings == []
    assert report.cases == CASES
    assert report.outcomes["200"] > 0 and report.outcomes["422 invalid-bitstream"] > 0
    import httpx

    response = httpx.post(f"{stack.url}/decode", files={"file": ("x.mlic", issue_11_stream(forge))},
                          headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    assert response.status_code == 422 and response.json()["code"] == "invalid-bitstream"
    assert "has 4 bytes" in response.json()["detail"]
    assert stack.procs["api"].poll() is None
