"""The coverage-guided target (scripts/fuzz_coverage.py, atheris) runs a short bounded session clean.

Seeded with the golden streams and a few structured inputs so that the first
runs already reach the entropy decoder; a finding makes libFuzzer exit non-zero
and leave a ``crash-*`` file. The longer run is in docs/BENCHMARKS.md.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNS = 1500


def test_a_short_coverage_guided_run_finds_nothing(tmp_path):
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for stream in (ROOT / "tests" / "golden").glob("*.mlic"):
        shutil.copy(stream, corpus / stream.name)
    for i, tail in enumerate([b"\x40\x00\x40\x00", b"\xff" * 64, bytes(range(256)) * 2]):
        (corpus / f"structured-{i}").write_bytes(b"S" + tail)
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "fuzz_coverage.py"), f"-atheris_runs={RUNS}",
                        "-max_total_time=60", "-max_len=8192", "-rss_limit_mb=4096", str(corpus)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Done" in r.stderr and not list(tmp_path.glob("crash-*"))
