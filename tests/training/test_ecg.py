"""``metalic train ecg`` (training/ecg.py) at tiny scale: the loop runs, the sparsity term moves α,
and the exported model codes a stream that decodes exactly in a fresh process."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from codec import bitstream
from codec.layers.gating import ALPHA_START
from codec.models.gated import GatedVariableRateHyperprior
from training.ecg import EcgConfig, train_ecg

from tests.support.images import make_image, png_bytes
from tests.support.models import write_start_weights, write_training_images

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A seeded dense N=16, M=24 weights file (the fine-tune's start) and three small images."""
    root = tmp_path_factory.mktemp("ecg")
    write_start_weights(root / "dense.pt", 0, 1e-3, 0.1)
    write_training_images(root / "imgs")
    return root


def config(tiny, out, **kw) -> EcgConfig:
    base = dict(init=str(tiny / "dense.pt"), data=[str(tiny / "imgs")], val=str(tiny / "imgs"), out=str(out),
                steps=6, batch_size=2, crop=64, lr=1e-4, gate_lr=0.5, gamma=1.0, alpha_target=0.0,
                val_every=6, val_images=2, val_size=128, log_every=1, ckpt_every=2, amp="off", threads=1)
    return EcgConfig(**(base | kw))


def rows(path) -> list[dict]:
    return list(csv.DictReader(open(path)))


class TestTrainEcg:
    def test_the_loop_runs_and_the_sparsity_term_pulls_alpha_to_its_target(self, tiny, tmp_path):
        ckpt = train_ecg(config(tiny, tmp_path / "run"), device="cpu", quiet=True)
        state = torch.load(ckpt, weights_only=True)
        assert state["step"] == 6 and state["recipe"] == "ecg" and "init_sha256" in state
        assert state["config"]["N"] == 16 and state["config"]["lmbda_max"] == 0.1  # the init file's
        alphas = [v.item() for k, v in state["model"].items() if k.endswith(".gate.alpha")]
        assert len(alphas) == 13 and all(ALPHA_START + 1 < a < 0.5 for a in alphas)
        train = [r for r in rows(tmp_path / "run" / "log.csv") if r["kind"] == "train"]
        penalty = [float(r["sparsity_loss"]) for r in train]
        assert penalty == sorted(penalty, reverse=True) and penalty[-1] < 0.7 * penalty[0]
        assert all(0 < float(r["density"]) <= 1 for r in train)
        val = [r for r in rows(tmp_path / "run" / "log.csv") if r["kind"] == "val"]
        assert len(val) == 3 and all(float(r["flops_ratio"]) > 0 for r in val)

    def test_resume_continues_the_uninterrupted_run(self, tiny, tmp_path):
        train_ecg(config(tiny, tmp_path / "a", steps=4, val=""), device="cpu", quiet=True)
        train_ecg(config(tiny, tmp_path / "b", steps=4, until=2, val=""), device="cpu", quiet=True)
        train_ecg(config(tiny, tmp_path / "b", steps=4, val=""), device="cpu", quiet=True)
        a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
        b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
        assert all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-4, atol=1e-6) for k in a)
        assert [r["alpha"] for r in rows(tmp_path / "a" / "log.csv")][:3] == \
            [r["alpha"] for r in rows(tmp_path / "b" / "log.csv")][:3]

    def test_resume_from_other_init_is_refused(self, tiny, tmp_path):
        train_ecg(config(tiny, tmp_path / "run", steps=1, val=""), device="cpu", quiet=True)
        write_start_weights(tmp_path / "other.pt", 1, 1e-3, 0.1)
        with pytest.raises(ValueError, match="other weights"):
            train_ecg(config(tiny, tmp_path / "run", init=str(tmp_path / "other.pt")), device="cpu", quiet=True)

    def test_bad_settings_are_rejected(self, tiny, tmp_path):
        for kw in ({"init": ""}, {"gamma": -1.0}, {"gate_lr": 0.0}):
            with pytest.raises(ValueError):
                train_ecg(config(tiny, tmp_path / "x", **kw), device="cpu", quiet=True)


class TestExportedModel:
    def test_cli_trains_exports_and_the_stream_decodes_exactly_in_a_fresh_process(self, tiny, tmp_path):
        from codec.pipeline import Encoder
        from metalic.cli import main

        cfg = tmp_path / "ecg.json"
        cfg.write_text(json.dumps({k: v for k, v in config(tiny, tmp_path / "run", steps=8).to_dict().items()}))
        assert main(["train", "ecg", "--config", str(cfg), "--quiet"]) == 0
        assert main(["train", "export", str(tmp_path / "run" / "last.pt"), "--name", "metalic-vr-ecg",
                     "--architecture", "metalic-vr-ecg", "--not-default", "--out", str(tmp_path / "w")]) == 0
        manifest = json.loads((tmp_path / "w" / "manifest.json").read_text())
        assert manifest["models"]["metalic-vr-ecg"]["ecg"]["init_sha256"]
        weights = str(tmp_path / "w" / "metalic-vr-ecg.pt")
        state = torch.load(weights, weights_only=True)
        assert any(k.endswith(".gate.alpha") for k in state["model"])

        enc = Encoder(model="metalic-vr-ecg", device="cpu", weights=weights)
        assert type(enc.backend.net) is GatedVariableRateHyperprior
        res = enc.encode(png_bytes(make_image(128, 96, seed=5)), {"model": "metalic-vr-ecg", "lmbda": 0.01,
                                                                  "preset": "fast"})
        assert bitstream.unpack(res.bitstream).model_id == "metalic-vr-ecg"
        (tmp_path / "a.mlic").write_bytes(res.bitstream)
        script = ("import sys, numpy as np\nfrom codec.pipeline import decode\n"
                  "np.save(sys.argv[2], decode(open(sys.argv[1], 'rb').read(), weights=sys.argv[3]).rgb)\n")
        subprocess.run([sys.executable, "-c", script, str(tmp_path / "a.mlic"), str(tmp_path / "rgb.npy"), weights],
                       check=True, cwd=ROOT, timeout=300)
        assert np.array_equal(np.load(tmp_path / "rgb.npy"), res.reconstruction)
