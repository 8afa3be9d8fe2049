"""bench.rd_compare: several bench rd runs in one table and plot, over one image set."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench import anchors
from bench.rd import RDConfig, run_rd
from bench.rd_compare import compare, main
from tests.bench.test_bench import FAKE_LAMBDAS, FakeMetalic, synthetic_image


class BetterMetalic(FakeMetalic):
    """The fake at a higher JPEG quality per λ: more bits, more PSNR, a curve of its own."""

    def encode(self, img: np.ndarray, lmbda: float) -> bytes:
        quality = int(np.clip(round(30 + 10 * math.log2(lmbda / 1e-3)), 1, 95))
        return anchors.encode("webp", img, quality)


@pytest.fixture
def two_runs(tmp_path):
    images = [("a", synthetic_image()), ("b", synthetic_image(seed=1))]
    config = RDConfig(lambdas=FAKE_LAMBDAS, codecs=("jpeg",))
    run_rd(images, tmp_path / "fast", metalic=FakeMetalic(), config=config)
    run_rd(images, tmp_path / "other", metalic=BetterMetalic(), config=config)
    return tmp_path


def test_each_run_gets_its_own_bd_against_the_shared_anchors(two_runs):
    out = two_runs / "cmp"
    result = compare([("fast", two_runs / "fast"), ("other", two_runs / "other")], out)
    fast = json.loads((two_runs / "fast" / "summary.json").read_text())["bd"]["jpeg"]["bd_rate"]
    assert result["bd"]["fast"]["jpeg"]["bd_rate"] == pytest.approx(fast)
    assert result["bd"]["other"]["jpeg"]["bd_rate"] != pytest.approx(fast)
    assert "fast" not in result["bd"]["fast"] and result["bd"]["other"]["fast"]["bd_rate"] is not None
    assert (out / "rd.png").stat().st_size > 0
    table = (out / "table.md").read_text()
    assert "| fast |" in table and "| other |" in table


def test_runs_over_other_images_are_refused(two_runs, capsys):
    run_rd([("a", synthetic_image())], two_runs / "one", metalic=FakeMetalic(),
           config=RDConfig(lambdas=FAKE_LAMBDAS, codecs=("jpeg",)))
    argv = ["--out", str(two_runs / "cmp"), f"fast={two_runs / 'fast'}", f"one={two_runs / 'one'}"]
    assert main(argv) == 2
    assert "other images" in capsys.readouterr().err
    assert main(["--out", str(two_runs / "cmp"), f"x={two_runs / 'missing'}"]) == 2
