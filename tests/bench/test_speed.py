"""``metalic bench speed`` at a tiny scale: real encodes, decodes, anchors and FLOP counts on small images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from bench import speed


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 64 * 128 * 3).reshape(64, 128, 3)
    img = np.clip(base + rng.normal(0, 15, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(folder / "a.png")
    return folder, img


def test_flop_count_matches_the_layers_by_hand():
    counted = speed.synthesis_flops(512, 768)
    from codec.weights import read_manifest

    manifest = read_manifest()
    M = manifest["models"][manifest["default"]]["config"]["M"]
    # g_s: four 5x5 stride-2 deconvs M→64→64→64→3 from 32x48 up, three inverse GDNs of 64 channels
    hw = [32 * 48, 64 * 96, 128 * 192, 256 * 384]
    deconv = 2 * 25 * (M * 64 * hw[0] + 64 * 64 * hw[1] + 64 * 64 * hw[2] + 64 * 3 * hw[3])
    gdn = 2 * 64 * 64 * (hw[1] + hw[2] + hw[3])
    assert counted["flops"]["synthesis"] == deconv + gdn
    # h_s: deconv N=64→M from 8x12, deconv M→3M/2 from 16x24, 3x3 conv 3M/2→2M at 32x48
    m1, m2 = M * 3 // 2, 2 * M
    assert counted["flops"]["hyper_synthesis"] == 2 * (25 * 64 * M * 96 + 25 * M * m1 * 384 + 9 * m1 * m2 * 1536)


def test_the_floor_is_the_counted_flops_at_the_measured_throughput():
    floor = speed.decode_floor(runs=1, height=64, width=128)
    for name in ("one_thread", "all_threads"):
        row = floor[name]
        assert row["gflops_per_s"] > 0
        assert row["floor_s"] == pytest.approx(floor["total_flops"] / (row["gflops_per_s"] * 1e9))


def test_decode_stages_are_parts_of_the_total(encoder_stream):
    stages = speed.time_decode(encoder_stream, runs=1)
    parts = ("parse", "checks", "entropy_z", "hyper_synthesis", "entropy_y", "synthesis", "to_rgb")
    assert set(parts) <= set(stages)
    assert 0 < sum(stages[p] for p in parts) <= stages["total"]
    assert stages["png_level_1_bytes"] > 0 and stages["png_level_3_bytes"] > 0


@pytest.fixture(scope="module")
def encoder_stream(tiny):
    from codec.pipeline import Encoder

    _, img = tiny
    import io

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return Encoder(device="cpu").encode(buf.getvalue(), {"preset": "fast", "target_bpp": 0.5}).bitstream


def test_the_cli_writes_the_table_and_json_without_the_service(tiny, tmp_path, capsys):
    from metalic.cli import main

    folder, _ = tiny
    out = tmp_path / "out"
    code = main(["bench", "speed", "--data", str(folder), "--out", str(out), "--presets", "fast",
                 "--timing-runs", "1", "--timing-codecs", "jpeg,webp", "--no-service"])
    assert code == 0
    summary = json.loads((out / "speed.json").read_text())
    assert set(summary["median"]["presets"]) == {"fast"}
    assert summary["median"]["presets"]["fast"]["total"] > 0
    assert set(summary["median"]["anchors"]) == {"jpeg", "webp"}
    assert summary["median"]["anchors"]["jpeg"]["decode_s"] > 0
    assert summary["floor"]["decode_s"] is None  # no 768x512 image in this run: no ratio is made up
    text = capsys.readouterr().out
    assert "floor (768x512)" in text and "decode stages" in text and (out / "speed.txt").read_text() in text + "\n"
    assert "service" not in summary


def test_the_service_needs_the_metalic_layer(tiny, tmp_path):
    from bench.rd import main_speed

    folder, _ = tiny
    assert main_speed(["--data", str(folder), "--out", str(tmp_path), "--presets", "fast", "--timing-runs", "1",
                       "--timing-codecs", "jpeg"]) == 2
