"""The service half of ``metalic bench speed`` on real processes and the real codec, at a tiny scale."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.support.redis import require_redis_server

pytestmark = pytest.mark.e2e


def test_decode_requests_per_second_and_jobs_per_hour_come_from_real_answers(tmp_path):
    require_redis_server()
    from codec.pipeline import Encoder
    from metalic.speed_service import measure_service

    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    stream = Encoder(device="cpu").encode(buf.getvalue(), {"preset": "fast", "target_bpp": 0.5}).bitstream
    report = measure_service([img], [stream], seconds=3, clients=2, jobs=1, workers=1, tmp=tmp_path)
    assert report["decodes"] > 0 and report["refused"] == 0
    assert report["decode_rps"] == pytest.approx(report["decodes"] / report["seconds"])
    assert len(report["job_seconds"]) == 1 and report["job_seconds"][0] > 0
    assert report["jobs_per_hour"] == pytest.approx(3600 / report["median_job_s"])


def test_a_garbage_stream_stops_the_measurement_instead_of_counting_refusals(tmp_path):
    require_redis_server()
    from metalic.speed_service import measure_service

    img = np.zeros((64, 64, 3), dtype=np.uint8)
    with pytest.raises(RuntimeError, match="POST /decode answered 4"):
        measure_service([img], [b"not a stream"], seconds=1, clients=1, jobs=0, workers=1, tmp=tmp_path)
