"""``metalic bench ecg`` (bench/ecg.py) on small seeded models: it prints and writes measured figures."""

import json

import torch

from bench.ecg import main
from codec.models.gated import GatedVariableRateHyperprior
from tests.support.images import make_image
from tests.support.models import SMALL, save_weights, small_net


def test_prints_the_table_and_writes_counted_flops_and_times(tmp_path, capsys):
    dense = save_weights(small_net(seed=3), tmp_path / "dense.pt")
    gated = GatedVariableRateHyperprior(**SMALL)
    gated.load_state_dict(small_net(seed=3).state_dict())
    torch.save({"model": gated.state_dict(), "config": dict(SMALL)}, tmp_path / "gated.pt")
    (tmp_path / "imgs").mkdir()
    make_image(128, 128, seed=1).save(tmp_path / "imgs" / "a.png")
    out = tmp_path / "ecg.json"
    assert main(["--data", str(tmp_path / "imgs"), "--images", "1", "--lambdas", "0.01", "--runs", "1",
                 "--dense-weights", str(dense), "--gated-weights", str(tmp_path / "gated.pt"), "--alpha", "0",
                 "--out", str(out)]) == 0
    assert "| 0.01 |" in capsys.readouterr().out
    s = json.loads(out.read_text())["lambdas"]["0.01"]
    assert s["ratio"]["flops_g_s"] > 1.2 and s["dense"]["decode_s"] > 0 and s["gated"]["synthesis_s"] > 0
    assert s["dense"]["bpp"] > 0 and s["images"] == ["a"]


def test_a_model_without_gates_is_refused(tmp_path, capsys):
    dense = save_weights(small_net(), tmp_path / "dense.pt")
    (tmp_path / "imgs").mkdir()
    make_image(64, 64).save(tmp_path / "imgs" / "a.png")
    assert main(["--data", str(tmp_path / "imgs"), "--images", "1", "--runs", "1", "--dense-weights", str(dense),
                 "--gated", "metalic-vr", "--gated-weights", str(dense)]) == 2
    assert "no channel gates" in capsys.readouterr().err
