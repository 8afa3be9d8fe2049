"""bench.training_progress on a tiny run folder: one row per snapshot, kept across reruns."""

from __future__ import annotations

import json

import torch
from PIL import Image

from bench.training_progress import main
from tests.support.models import SMALL, small_net, synthetic_image


def test_a_snapshot_gets_a_row_with_bd_rates_and_the_unquantized_psnr(tmp_path, capsys):
    run, data, out = tmp_path / "run", tmp_path / "data", tmp_path / "out"
    run.mkdir(), data.mkdir()
    for i in range(2):
        Image.fromarray(synthetic_image(96, 64, seed=i)).save(data / f"im{i}.png")
    torch.save({"model": small_net().state_dict(), "step": 10, "config": dict(SMALL)}, run / "snapshot_0000010.pt")
    argv = ["--run", str(run), "--data", str(data), "--out", str(out), "--every", "10", "--no-last",
            "--lambdas", "0.002,0.01,0.05,0.2"]
    assert main(argv) == 0
    (row,) = json.loads((out / "progress.json").read_text())
    assert row["step"] == 10 and set(row) >= {"bd_rate_vs_jpeg", "bd_rate_vs_webp", "bd_rate_vs_avif"}
    assert 5 < row["unquantized_psnr_top"] < 60
    assert f"{row['unquantized_psnr_top']:.2f}" in (out / "progress.md").read_text()
    capsys.readouterr()
    assert main(argv) == 0  # measured rows are kept, not measured again
    assert '"step"' not in capsys.readouterr().out
