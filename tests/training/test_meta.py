"""Meta fine-tuning (training/meta.py) and its benchmark (bench/meta_bench.py), on tiny models."""

import csv
import json

import numpy as np
import pytest
import torch

from codec.models.variable_rate import VariableRateHyperprior
from training.meta import MetaConfig, encode, inner_loop, load_init, rd_terms, train_meta

from tests.support.images import make_image
from tests.support.models import write_start_weights, write_training_images


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A seeded N=16, M=24 weights file and a folder of three small images."""
    root = tmp_path_factory.mktemp("meta")
    write_start_weights(root / "tiny.pt")
    write_training_images(root / "imgs")
    return root


def config(tiny, out, **kw) -> MetaConfig:
    base = dict(init=str(tiny / "tiny.pt"), data=[str(tiny / "imgs")], val=str(tiny / "imgs"), out=str(out),
                steps=4, batch_size=2, crop=64, inner_steps=2, val_every=2, val_images=2, val_size=128,
                log_every=1, ckpt_every=1, amp="off", threads=1)
    return MetaConfig(**(base | kw))


def rows(path):
    return list(csv.DictReader(open(path)))


class TestInnerLoop:
    def test_first_order_refined_latents_carry_no_inner_graph(self, tiny):
        net, _ = load_init(tiny / "tiny.pt", "cpu")
        x, lam = torch.rand(2, 3, 64, 64), torch.tensor([1e-3, 1e-2])
        y0, z0 = encode(net, x, lam, False)
        out = inner_loop(net, x, y0, z0, lam, steps=2, lr=0.1)
        dy = (out["y"] - y0).detach()
        # y = y0 + constant: the gradient reaches g_a through y0 exactly once
        g = torch.autograd.grad(out["y"].sum(), y0)[0]
        assert torch.equal(g, torch.ones_like(g))
        assert dy.abs().max() > 0 and out["forward"]["loss_i"].shape == (2,)

    def test_second_order_differentiates_through_the_inner_steps(self, tiny):
        net, _ = load_init(tiny / "tiny.pt", "cpu")
        x, lam = torch.rand(1, 3, 64, 64), torch.tensor([1e-2])
        y0, z0 = encode(net, x, lam, False)
        out = inner_loop(net, x, y0.detach(), z0.detach(), lam, steps=1, lr=1.0, opt="sgd", second_order=True,
                         keep_forward=False)
        # y0 is detached: any gradient in g_s comes through the inner gradient
        loss = out["y"].pow(2).sum()
        g = torch.autograd.grad(loss, net.g_s_convs[0].weight, allow_unused=True)[0]
        assert g is not None and g.abs().sum() > 0

    def test_refinement_lowers_the_relaxed_loss(self, tiny):
        from codec.adapt.refine import Rounding

        net, _ = load_init(tiny / "tiny.pt", "cpu")
        x = torch.from_numpy(np.array(make_image(64, 64, seed=4))).permute(2, 0, 1)[None].float() / 255
        lam = torch.tensor([1e-2])
        y0, z0 = encode(net, x, lam, False)
        y0, z0 = y0.detach(), z0.detach()
        torch.manual_seed(0)
        out = inner_loop(net, x, y0, z0, lam, steps=4, lr=0.05, keep_forward=False)

        def expected_loss(y, z):  # the noisy loss the inner loop descends, averaged over draws
            torch.manual_seed(1)
            with torch.no_grad():
                return sum(rd_terms(net, x, y, z, lam, Rounding("noise"), False)["loss_i"] for _ in range(16))

        assert expected_loss(out["y"], out["z"]) < expected_loss(y0, z0)


class TestTrainMeta:
    def test_runs_logs_and_checkpoints(self, tiny, tmp_path):
        ckpt = train_meta(config(tiny, tmp_path / "run"), device="cpu", quiet=True)
        state = torch.load(ckpt, weights_only=True)
        assert state["step"] == 4 and state["config"]["N"] == 16 and "init_sha256" in state
        log = rows(tmp_path / "run" / "log.csv")
        assert [int(r["step"]) for r in log if r["kind"] == "train"] == [1, 2, 3, 4]
        val = [r for r in log if r["kind"] == "val"]
        assert {int(r["step"]) for r in val} == {0, 2, 4} and all(np.isfinite(float(r["drop"])) for r in val)

    def test_resume_matches_an_uninterrupted_run(self, tiny, tmp_path):
        train_meta(config(tiny, tmp_path / "a", steps=4, val_every=0), device="cpu", quiet=True)
        train_meta(config(tiny, tmp_path / "b", steps=2, val_every=0), device="cpu", quiet=True)
        train_meta(config(tiny, tmp_path / "b", steps=4, val_every=0), device="cpu", quiet=True)
        a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
        b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert [r["loss"] for r in rows(tmp_path / "a" / "log.csv")] == [r["loss"] for r in rows(tmp_path / "b" / "log.csv")]

    def test_zero_inner_steps_is_the_plain_baseline_fine_tuning(self, tiny, tmp_path):
        train_meta(config(tiny, tmp_path / "run", steps=2, inner_steps=0, val_every=0), device="cpu", quiet=True)
        train = [r for r in rows(tmp_path / "run" / "log.csv") if r["kind"] == "train"]
        assert all(r["loss"] == r["loss_fwd"] == r["loss_ref"] and float(r["drop"]) == 0 for r in train)

    def test_resume_from_other_init_is_refused(self, tiny, tmp_path):
        train_meta(config(tiny, tmp_path / "run", steps=1, val_every=0), device="cpu", quiet=True)
        torch.manual_seed(1)
        other = VariableRateHyperprior(16, 24)
        torch.save({"model": other.state_dict(), "config": other.config()}, tmp_path / "other.pt")
        with pytest.raises(ValueError, match="other weights"):
            train_meta(config(tiny, tmp_path / "run", init=str(tmp_path / "other.pt")), device="cpu", quiet=True)

    def test_bad_settings_are_rejected(self, tiny, tmp_path):
        for kw in ({"inner_steps": 17}, {"inner_opt": "rmsprop"}, {"forward_weight": 1.0}, {"rounding": "ste"}):
            with pytest.raises(ValueError):
                train_meta(config(tiny, tmp_path / "x", **kw), device="cpu", quiet=True)

    def test_cli_and_export_round_trip(self, tiny, tmp_path):
        from metalic.cli import main
        from training.export import export
        from codec.weights import load_model, sha256_file

        out = tmp_path / "run"
        argv = ["train", "meta", "--init", str(tiny / "tiny.pt"), "--out", str(out), "--data", str(tiny / "imgs"),
                "--val", "", "--steps", "2", "--batch-size", "1", "--crop", "64", "--inner-steps", "1",
                "--amp", "off", "--no-second-order", "--quiet"]
        assert main(argv) == 0
        entry = export(out / "last.pt", "metalic-vr-meta", tmp_path / "w", make_default=False)
        assert entry["meta"]["init_sha256"] == sha256_file(tiny / "tiny.pt")
        assert entry["sha256"] == sha256_file(tmp_path / "w" / "metalic-vr-meta.pt")
        manifest = json.loads((tmp_path / "w" / "manifest.json").read_text())
        assert manifest["default"] == "metalic-vr-meta"  # the only entry of a fresh manifest
        assert load_model("metalic-vr", "cpu", str(tmp_path / "w" / "metalic-vr-meta.pt")).trained


class TestMetaBench:
    def test_table_and_bd_rate_are_written(self, tiny, tmp_path):
        from bench.meta_bench import run_meta_bench

        img = np.array(make_image(128, 128, seed=3))
        s = run_meta_bench([("a", img)], str(tiny / "tiny.pt"), str(tiny / "tiny.pt"), tmp_path, iters=(8,),
                           lr_grid={8: (0.3, 0.6)}, refine_lambdas=(0.01,), bd_lambdas=(0.003, 0.03))
        row = s["table"][0]
        assert row["iters"] == 8 and row["base_mean_drop"] > 0
        # the same weights on both sides: same drops, zero improvement, zero BD-rate
        assert row["delta_mean_drop_pct"] == pytest.approx(0.0, abs=1e-9)
        assert s["forward"]["bd_rate_meta_vs_base"] == pytest.approx(0.0, abs=1e-9)
        assert (tmp_path / "meta.md").exists() and (tmp_path / "meta.json").exists()
