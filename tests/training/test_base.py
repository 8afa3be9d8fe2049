"""`metalic train base` on a tiny model: the loss falls, and resume continues exactly."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from training.base import train
from training.config import TrainConfig


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("train_images")
    rng = np.random.default_rng(0)
    for i in range(6):
        yy, xx = np.mgrid[0:96, 0:128].astype(np.float32)
        rgb = np.stack([128 + 100 * np.sin(xx / (5 + i)), 128 + 100 * np.cos(yy / (7 + i)), (xx + yy + 30 * i) % 256], -1)
        Image.fromarray(np.clip(rgb + rng.normal(0, 3, rgb.shape), 0, 255).astype(np.uint8)).save(d / f"{i}.png")
    return d


def tiny_config(data_dir, out, steps, **kw) -> TrainConfig:
    return TrainConfig(data=[str(data_dir)], val=str(data_dir), out=str(out), N=16, M=24, steps=steps,
                       batch_size=4, crop=64, lr=1e-3, lmbda_min=0.01, lmbda_max=0.01, ckpt_every=10,
                       snapshot_every=1000, val_every=1000, val_images=2, val_size=64, log_every=1,
                       amp="off", threads=1, **kw)


def losses(out) -> list[float]:
    return [float(r["loss"]) for r in csv.DictReader(open(out / "log.csv")) if r["kind"] == "train"]


class TestTrainBase:
    def test_loss_falls(self, data_dir, tmp_path):
        train(tiny_config(data_dir, tmp_path, 60), quiet=True)
        loss = losses(tmp_path)
        assert len(loss) == 60
        assert np.mean(loss[-10:]) < 0.5 * np.mean(loss[:10])

    def test_resume_continues_from_checkpoint_exactly(self, data_dir, tmp_path):
        # decay_from=1: a run stopped by its step budget then has the same learning rates
        # as the longer run (the schedule depends on the planned number of steps)
        full, split = tmp_path / "full", tmp_path / "split"
        train(tiny_config(data_dir, full, 30, decay_from=1.0), quiet=True)
        train(tiny_config(data_dir, split, 20, decay_from=1.0), quiet=True)
        assert torch.load(split / "last.pt", weights_only=True)["step"] == 20
        train(tiny_config(data_dir, split, 30, decay_from=1.0), quiet=True)
        a = torch.load(full / "last.pt", weights_only=True)
        b = torch.load(split / "last.pt", weights_only=True)
        assert b["step"] == 30
        # same batches, noise and optimizer state; Adam's fused arithmetic may round the
        # last bit differently in a new process, so equality is to float precision
        assert all(torch.allclose(a["model"][k].float(), b["model"][k].float(), rtol=1e-4, atol=1e-6)
                   for k in a["model"])
        la, lb = losses(full), losses(split)
        assert len(la) == len(lb) == 30
        assert la[:21] == lb[:21]  # bit-identical up to and including the first resumed step
        assert np.allclose(la, lb, rtol=1e-4)

    def test_mismatched_checkpoint_is_refused(self, data_dir, tmp_path):
        train(tiny_config(data_dir, tmp_path, 10), quiet=True)
        cfg = tiny_config(data_dir, tmp_path, 20)
        cfg.N = 8
        with pytest.raises(ValueError, match="another N/M"):
            train(cfg, quiet=True)

    def test_init_continues_from_exported_weights(self, data_dir, tmp_path):
        from training.export import export

        train(tiny_config(data_dir, tmp_path / "a", 40), quiet=True)
        export(tmp_path / "a" / "last.pt", "metalic-vr", tmp_path / "w")
        train(tiny_config(data_dir, tmp_path / "b", 1, init=str(tmp_path / "w" / "metalic-vr.pt")), quiet=True)
        train(tiny_config(data_dir, tmp_path / "c", 1), quiet=True)
        assert losses(tmp_path / "b")[0] < 0.5 * losses(tmp_path / "c")[0]

    def test_half_export_halves_the_file_and_codes_like_float32(self, data_dir, tmp_path):
        from codec.pipeline import Encoder, decode
        from training.export import export

        train(tiny_config(data_dir, tmp_path / "a", 20), quiet=True)
        full = export(tmp_path / "a" / "last.pt", "metalic-vr", tmp_path / "f")
        half = export(tmp_path / "a" / "last.pt", "metalic-vr", tmp_path / "h", half=True)
        assert half["storage"] == "float16 kernels" and full["storage"] == "float32"
        kernels = [v for v in torch.load(tmp_path / "h" / "metalic-vr.pt", weights_only=True)["model"].values()
                   if v.dtype == torch.float16]
        saved = sum(2 * v.numel() for v in kernels)  # the CDF tables dominate a model this small
        assert kernels and full["bytes"] - half["bytes"] >= 0.95 * saved
        img = (data_dir / "0.png").read_bytes()
        results = {}
        for name in ("f", "h"):
            weights = str(tmp_path / name / "metalic-vr.pt")
            res = Encoder(weights=weights).encode(img, {"preset": "fast", "lmbda": 0.01})
            # the tables were built for the rounded kernels: the decoder gives the encoder's pixels
            assert np.array_equal(decode(res.bitstream, weights=weights).rgb, res.reconstruction)
            results[name] = res.metadata
        assert abs(results["h"]["psnr"] - results["f"]["psnr"]) < 0.05
        assert abs(results["h"]["bpp"] / results["f"]["bpp"] - 1) < 0.02

    def test_until_stops_early_and_keeps_the_schedule(self, data_dir, tmp_path):
        # --until stops a run on a long schedule (decay included) and the resumed run
        # follows the same learning rates as one run straight through
        full, split = tmp_path / "full", tmp_path / "split"
        train(tiny_config(data_dir, full, 30, decay_from=0.5, warmup=5), quiet=True)
        train(tiny_config(data_dir, split, 30, decay_from=0.5, warmup=5, until=12), quiet=True)
        assert torch.load(split / "last.pt", weights_only=True)["step"] == 12
        train(tiny_config(data_dir, split, 30, decay_from=0.5, warmup=5), quiet=True)
        lr = lambda out: [float(r["lr"]) for r in csv.DictReader(open(out / "log.csv")) if r["kind"] == "train"]
        assert lr(full) == lr(split)
        assert np.allclose(losses(full), losses(split), rtol=1e-4)


class TestSchedule:
    def test_warmup_rises_linearly_then_holds_then_decays(self):
        from training.base import learning_rate

        cfg = TrainConfig(lr=1e-3, lr_final=1e-4, steps=100, warmup=10, decay_from=0.9)
        assert learning_rate(cfg, 0) == pytest.approx(1e-4)
        assert learning_rate(cfg, 4) == pytest.approx(5e-4)
        assert learning_rate(cfg, 10) == learning_rate(cfg, 89) == 1e-3
        assert learning_rate(cfg, 100) == pytest.approx(1e-4)

    def test_an_extended_run_keeps_its_decay_and_holds_the_final_rate(self):
        from training.base import learning_rate

        short = TrainConfig(lr=1e-3, lr_final=1e-4, steps=100, decay_from=0.8)
        longer = TrainConfig(lr=1e-3, lr_final=1e-4, steps=150, decay_from=0.8, decay_until=100)
        assert [learning_rate(longer, s) for s in range(100)] == [learning_rate(short, s) for s in range(100)]
        assert learning_rate(longer, 90) > learning_rate(longer, 100) == learning_rate(longer, 149) == pytest.approx(1e-4)


class TestStraightThroughQuantization:
    def test_ste_latent_is_mean_plus_integers_and_gradients_reach_the_analysis(self):
        from codec.models.variable_rate import VariableRateHyperprior

        torch.manual_seed(0)
        net = VariableRateHyperprior(16, 24, 0.01, 0.1).train()
        captured = {}
        gc_forward = net.gaussian_conditional.forward

        def spy(y, scales, means=None, **kw):
            captured["means"] = means
            return gc_forward(y, scales, means=means, **kw)

        net.gaussian_conditional.forward = spy
        synth = net.synthesize

        def spy_synth(y, *a, **k):
            captured["y"] = y
            return synth(y, *a, **k)

        net.synthesize = spy_synth
        x = torch.rand(2, 3, 64, 64)
        out = net(x, torch.tensor([0.01, 0.1]), quant="ste")
        offset = captured["y"] - captured["means"]
        assert torch.allclose(offset, offset.round(), atol=1e-4)
        out["x_hat"].pow(2).mean().backward()
        assert net.g_a[0].weight.grad.abs().sum() > 0

        captured.clear()
        net(x, torch.tensor([0.01, 0.1]), quant="noise")
        offset = captured["y"] - captured["means"]
        assert not torch.allclose(offset, offset.round(), atol=1e-4)
