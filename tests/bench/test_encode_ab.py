"""The old-vs-new encoder benchmark (bench/encode_ab.py): real child encoders on a small seeded model."""

import subprocess

import pytest

from tests.support.models import png_bytes, save_weights, small_net, synthetic_image


def test_same_code_on_both_sides_gives_the_same_files(tmp_path):
    from bench.encode_ab import ROOT, run_encode_ab

    weights = save_weights(small_net(), tmp_path / "small.pt")
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes(synthetic_image(64, 64)))
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    s = run_encode_ab([("a", path)], old=head, preset="fast", lambdas=(0.01, 0.1), weights=str(weights),
                      forward=True)
    old, new = s["records"][0]["points"]["old"], s["records"][0]["points"]["new"]
    # the fast preset codes the forward pass, which HEAD and this tree code the same
    assert [p["bytes"] for p in old] == [p["bytes"] for p in new]
    assert s["bd_rate_new_vs_old"] == pytest.approx(0.0, abs=1e-6)
    assert s["bd_rate_vs_forward"]["new"] == pytest.approx(0.0, abs=1e-6)
    assert s["speedup_cpu"] > 0 and s["wall_s_per_encode"]["old"] > 0


def test_an_unknown_revision_is_bad_input(tmp_path, capsys):
    from bench.encode_ab import main

    (tmp_path / "a.png").write_bytes(png_bytes(synthetic_image(64, 64)))
    assert main(["--data", str(tmp_path), "--old", "no-such-revision-xyz"]) == 2
    assert "no-such-revision-xyz" in capsys.readouterr().err


def test_a_relative_data_folder_reaches_the_encoders(tmp_path, monkeypatch, capsys):
    # the encoder children run in other working directories, so the bench must hand them absolute paths
    from bench.encode_ab import ROOT, main

    weights = save_weights(small_net(), tmp_path / "small.pt")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(png_bytes(synthetic_image(64, 64)))
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    monkeypatch.chdir(tmp_path)
    assert main(["--data", "images", "--old", head, "--preset", "fast", "--lambdas", "0.01,0.1",
                 "--weights", str(weights)]) == 0
    assert "BD-rate new vs old: +0.00 %" in capsys.readouterr().out
