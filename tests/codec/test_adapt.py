"""Tests of codec/adapt: latent refinement, λ_k adaptation, bias search, rate control, stages.

Every model here is a small seeded random network built in the test (never
downloaded), and every image is synthetic and at most 320 px, so the file
runs in well under a minute on a busy 2-core machine. With random weights
the *mechanics* are what is tested (never-worse rules, exact decoding, rate
control on a rate that is still monotone in λ), not the gains.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from codec import bitstream
from codec.adapt.bias_search import LATENT_CELL, MARGIN_CELLS, RING, _Synth, search_bias
from codec.adapt.folded import folded_view
from codec.adapt.goal import Goal
from codec.adapt.lambda_adapt import adapt_lambda
from codec.adapt.rate_control import search_rate
from codec.adapt.refine import (ROUNDINGS, SGA_TAU_MAX, SGA_TAU_MIN, RDCost, Rounding, TargetQuality, TargetRate,
                                hard_cost, refine_latents)
from codec.adapt.stages import run_stages
from codec.backends import VariableRateBackend, ZooBackend
from codec.constants import LAMBDA_MIN, PATCH_SIZE
from codec.image import load_image, pad, to_tensor
from codec.options import RATE_TOLERANCE, validate_options
from codec.pipeline import Encoder, decode
from codec.rate import index_to_lambda, lambda_to_index
from codec.weights import LoadedModel
from tests.support.images import make_image
from tests.support.models import SMALL, png_bytes, save_weights, small_net, synthetic_image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> Path:
    return save_weights(small_net(), tmp_path_factory.mktemp("w") / "small.pt")


@pytest.fixture(scope="session")
def encoder(weights) -> Encoder:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Encoder(weights=str(weights), device="cpu")


@pytest.fixture(scope="session")
def vr_backend() -> VariableRateBackend:
    net = small_net()
    net.update(force=True)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return VariableRateBackend(net)


def image_tensor(img: np.ndarray) -> torch.Tensor:
    return pad(to_tensor(img, "cpu"))


class TestRounding:
    def test_sga_temperature_anneals_from_max_to_min(self):
        r = Rounding("sga", 100)
        taus = []
        for step in range(100):
            r.set_step(step)
            taus.append(r.tau)
        assert taus[0] == pytest.approx(SGA_TAU_MAX)
        assert taus[-1] == pytest.approx(SGA_TAU_MIN)
        assert all(a >= b for a, b in zip(taus, taus[1:]))

    @pytest.mark.parametrize("mode", ROUNDINGS)
    def test_rounding_stays_within_half_a_bin_and_has_gradients(self, mode):
        v = (torch.randn(1000) * 3).requires_grad_(True)
        r = Rounding(mode, 10)
        r.set_step(9)
        out = r(v, "y")
        assert (out - v).abs().max().item() <= 1.0
        out.sum().backward()
        assert v.grad is not None and v.grad.abs().sum() > 0

    @pytest.mark.parametrize("tau", [0.5, 0.2, 0.05])
    def test_sga_samples_the_two_class_gumbel_softmax_of_yang_et_al(self, tau):
        # the sigmoid-of-a-logistic form must give the distribution of eq. 5's stacked softmax
        torch.manual_seed(0)
        v = torch.tensor([0.1, 0.35, 0.5, 0.8, -1.3]).repeat_interleave(40000)
        lo = torch.floor(v)
        d = torch.stack([-torch.atanh((v - lo).clamp(-1 + 1e-5, 1 - 1e-5)),
                         -torch.atanh((lo + 1 - v).clamp(-1 + 1e-5, 1 - 1e-5))], -1) / tau
        g = -torch.log(-torch.log(torch.rand_like(d).clamp(1e-10, 1 - 1e-7)))
        reference = lo + torch.softmax((d + g) / tau, -1)[..., 1]
        r = Rounding("sga", 10)
        r.tau = tau
        ours = r(v, "y")
        for a, b in zip(ours.view(5, -1), reference.view(5, -1)):
            assert a.mean().item() == pytest.approx(b.mean().item(), abs=0.01)
            assert a.std().item() == pytest.approx(b.std().item(), abs=0.01)

    def test_unknown_rounding_is_rejected(self):
        with pytest.raises(ValueError, match="rounding"):
            Rounding("magic")


class TestRefine:
    @pytest.mark.parametrize("rounding", ROUNDINGS)
    def test_result_never_worse_than_start(self, vr_backend, rounding):
        x = image_tensor(synthetic_image(64, 64))
        ri = vr_backend.rate_index(0.01)
        lat = vr_backend.encode_latents(x, ri)
        res = refine_latents(vr_backend, x, lat, ri, 6, rounding=rounding, eval_every=2, amp=False)
        assert res.best.cost <= res.start.cost
        again = hard_cost(vr_backend, x, res.latents, ri, vr_backend.rate_lambda(ri), 64, 64)
        assert again.cost == pytest.approx(res.best.cost, rel=1e-5)

    def test_diverging_steps_return_the_start(self, vr_backend):
        x = image_tensor(synthetic_image(64, 64, seed=1))
        ri = vr_backend.rate_index(0.01)
        lat = vr_backend.encode_latents(x, ri)
        res = refine_latents(vr_backend, x, lat, ri, 4, rounding="ste", lr=200.0, eval_every=1, amp=False)
        assert res.best.cost <= res.start.cost
        if res.best_step == 0:
            assert all(torch.equal(a, b) for a, b in zip(res.latents, lat))

    def test_steered_objective_never_returns_worse_than_start(self, vr_backend):
        x = image_tensor(synthetic_image(64, 64))
        ri = vr_backend.rate_index(0.01)
        lat = vr_backend.encode_latents(x, ri)
        start = hard_cost(vr_backend, x, lat, ri, 0.01, 64, 64)
        obj = TargetRate(aim=start.bpp * 0.9, band=0.01 * start.bpp, start_bpp=start.bpp, lmbda_range=(1e-3, 0.1))
        res = refine_latents(vr_backend, x, lat, ri, 6, lmbda=0.01, objective=obj, eval_every=1, amp=False)
        assert obj.key(res.best) <= obj.key(res.start)
        assert res.lmbda != 0.01  # the loss λ was steered
        assert len(res.last) == len(lat)

    def test_the_hyper_latent_is_held_from_z_hold_and_its_hyper_synthesis_not_rerun(self, vr_backend, monkeypatch):
        monkeypatch.setattr("codec.adapt.refine.Z_HOLD_MIN_STEPS", 1)
        x = image_tensor(synthetic_image(64, 64, seed=2))
        ri = vr_backend.rate_index(0.01)
        lat = vr_backend.encode_latents(x, ri)
        view = folded_view(vr_backend, ri)
        view.net._hyper = None  # what an earlier test left
        calls = []
        real = type(view.net._net).hyper_synthesis
        monkeypatch.setattr(type(view.net._net), "hyper_synthesis", lambda net, z: calls.append(1) or real(net, z))
        held = refine_latents(vr_backend, x, lat, ri, 6, eval_every=6, z_hold=0.0, amp=False)
        # held from the first step: z never moves, and ẑ's entropy parameters are computed once
        assert torch.equal(held.last[1], lat[1]) and len(calls) == 1
        moving = refine_latents(vr_backend, x, lat, ri, 6, eval_every=6, z_hold=1.0, amp=False)
        assert not torch.equal(moving.last[1], lat[1]) and len(calls) > 6
        assert held.best.cost <= held.start.cost

    def test_start_latents_are_not_modified(self, vr_backend):
        x = image_tensor(synthetic_image(64, 64))
        ri = vr_backend.rate_index(0.01)
        lat = vr_backend.encode_latents(x, ri)
        before = [t.clone() for t in lat]
        refine_latents(vr_backend, x, lat, ri, 3, amp=False)
        assert all(torch.equal(a, b) for a, b in zip(before, lat))


def zoo_backend(kind: str) -> ZooBackend:
    from compressai.models import FactorizedPrior, MeanScaleHyperprior, ScaleHyperprior

    cls = {"mean-scale-hyperprior": MeanScaleHyperprior, "scale-hyperprior": ScaleHyperprior,
           "factorized": FactorizedPrior}[kind]
    torch.manual_seed(0)
    net = cls(N=32, M=48)
    net.update(force=True)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    slug = {"mean-scale-hyperprior": "mbt2018-mean", "scale-hyperprior": "bmshj2018-hyperprior",
            "factorized": "bmshj2018-factorized"}[kind]
    return ZooBackend(slug, kind, {1: net}, {1: 0.0067})


def zoo_encoder(backend: ZooBackend) -> Encoder:
    """An Encoder over an in-test zoo network (no weights file, so no verify-by-name)."""
    enc = Encoder.__new__(Encoder)
    enc.device, enc.weights, enc.max_pixels = "cpu", None, 1 << 24
    enc.loaded = LoadedModel(backend.slug, backend, b"\0" * 8, False)
    return enc


class TestZooRefine:
    @pytest.mark.parametrize("kind", ["mean-scale-hyperprior", "scale-hyperprior", "factorized"])
    def test_refines_zoo_latents_never_worse(self, kind):
        b = zoo_backend(kind)
        x = image_tensor(synthetic_image(64, 64))
        lat = b.encode_latents(x, 1)
        res = refine_latents(b, x, lat, 1, 5, rounding="sga", eval_every=1, amp=False)
        assert res.best.cost <= res.start.cost
        assert len(res.latents) == len(lat)

    @pytest.mark.parametrize("target", [{"lmbda": 0.0067}, {"target_bpp": 1.0}])
    def test_stages_on_zoo_backend_code_a_decodable_file(self, target):
        b = zoo_backend("mean-scale-hyperprior")
        enc = zoo_encoder(b)
        img = load_image(png_bytes(synthetic_image(64, 64)), 1 << 24)
        x = image_tensor(img.rgb)
        opts = validate_options({**target, "preset": "balanced", "refine_steps": 4, "bias_search": True})
        timings, stages = {}, {}
        first = search_rate(enc.coder, x, img, opts, lambda p: None)
        cand = run_stages(enc.coder, x, img, opts, first, lambda p: None, timings, stages)
        assert set(timings) == {"refine", "adapt_lambda", "bias_search"}
        assert "skipped" in stages["adapt_lambda"] and "skipped" in stages["bias_search"]
        assert "rounds" in stages["refine"]
        p = bitstream.unpack(cand.data)
        x_hat = b.decompress([[s] for s in p.strings], p.latent_shape, p.rate_index)
        rgb = (x_hat[..., :64, :64].clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
        assert np.array_equal(rgb, cand.rgb)


class TestLambdaAdapt:
    def test_values_are_grid_indices_and_never_worse(self, vr_backend):
        x = image_tensor(synthetic_image(64, 64))
        ri = vr_backend.rate_index(0.01)
        y_hat = vr_backend.compress_latents(vr_backend.encode_latents(x, ri), ri)["y_hat"]
        res = adapt_lambda(vr_backend, x, y_hat, ri, 5, amp=False)
        assert len(res.lambda_k) == 4 and all(type(i) is int for i in res.lambda_k)
        assert res.mse_best <= res.mse_start

    def test_sample_tiles_match_the_full_synthesis(self, vr_backend):
        from codec.adapt.lambda_adapt import TILE_CELLS, sample_tiles

        h, w = 420, 520
        x = image_tensor(synthetic_image(w, h))
        ri = vr_backend.rate_index(0.01)
        y_hat = vr_backend.compress_latents(vr_backend.encode_latents(x, ri), ri)["y_hat"]
        ys, xs, off = sample_tiles(y_hat, x, h, w)
        assert ys.shape[0] > 1 and off > 0
        s = TILE_CELLS * LATENT_CELL
        with torch.no_grad():
            full = vr_backend.synthesize(y_hat, ri, None)
            part = vr_backend.synthesize(ys, ri, None)
        found = 0
        for r in range(0, h - s + 1, LATENT_CELL):
            for c in range(0, w - s + 1, LATENT_CELL):
                for i in range(xs.shape[0]):
                    if torch.equal(x[..., r:r + s, c:c + s], xs[i:i + 1]):
                        found += 1
                        assert torch.allclose(full[..., r:r + s, c:c + s], part[i:i + 1, :, off:off + s, off:off + s],
                                              atol=1e-5)
        assert found == xs.shape[0]

    def test_kept_lambda_k_decode_exactly_in_a_fresh_process(self, encoder, weights, tmp_path):
        res = encoder.encode(png_bytes(synthetic_image(128, 96)),
                             {"lmbda": 0.01, "preset": "fast", "adapt_lambda": True, "lambda_steps": 8})
        meta = res.metadata
        assert meta["stages"]["adapt_lambda"]["kept"], meta["stages"]
        assert len(meta["lambda_k"]) == 4
        for v in meta["lambda_k"]:
            assert v == index_to_lambda(lambda_to_index(v))  # on the grid, bit for bit
        assert len(bitstream.unpack(res.bitstream).lambda_k) == 4
        (tmp_path / "a.mlic").write_bytes(res.bitstream)
        script = (
            "import sys, numpy as np, warnings; warnings.simplefilter('ignore')\n"
            "from codec.pipeline import decode\n"
            "r = decode(open(sys.argv[1], 'rb').read(), weights=sys.argv[2])\n"
            "np.save(sys.argv[3], r.rgb)\n"
        )
        subprocess.run([sys.executable, "-c", script, str(tmp_path / "a.mlic"), str(weights), str(tmp_path / "a.npy")],
                       check=True, cwd=ROOT, timeout=300)
        assert np.array_equal(np.load(tmp_path / "a.npy"), res.reconstruction)


def test_max_file_of_the_shipped_model_decodes_exactly_in_a_fresh_process(tmp_path):
    """Every stage on (refinement, λ_k, the shipped bias bank), decoded by a new process."""
    encoder = Encoder(device="cpu")
    res = encoder.encode(png_bytes(synthetic_image(320, 272, seed=3)),
                         {"lmbda": 0.002, "preset": "max", "refine_steps": 4, "lambda_steps": 3})
    stages = res.metadata["stages"]
    assert {"refine", "adapt_lambda", "bias_search"} <= set(stages)
    assert "skipped" not in stages["bias_search"], stages["bias_search"]  # the shipped bank is not empty
    assert any(bitstream.unpack(res.bitstream).bias_indices), "the file should carry non-zero bank indices"
    (tmp_path / "a.mlic").write_bytes(res.bitstream)
    script = (
        "import sys, numpy as np, warnings; warnings.simplefilter('ignore')\n"
        "from codec.pipeline import decode\n"
        "np.save(sys.argv[2], decode(open(sys.argv[1], 'rb').read()).rgb)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "a.mlic"), str(tmp_path / "a.npy")],
                   check=True, cwd=ROOT, timeout=300)
    assert np.array_equal(np.load(tmp_path / "a.npy"), res.reconstruction)


class TestBiasSearch:
    @pytest.fixture(scope="class")
    def bank_backend(self):
        net = small_net(bank=True)
        net.update(force=True)
        net.eval()
        return VariableRateBackend(net)

    def test_crop_synthesis_equals_full_synthesis_on_measured_region(self, bank_backend):
        b = bank_backend
        h, w = 320, 320
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
        ri = b.rate_index(0.01)
        y_hat = b.compress_latents(b.encode_latents(x, ri), ri)["y_hat"]
        grid = b.net.bias_bank.grid_shape(h, w)
        idx = torch.randint(0, 21, grid, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            full = b.synthesize(y_hat, ri, None, idx)
            s = _Synth(b, y_hat, ri, None, grid)
            hy, wy = y_hat.shape[-2:]
            for p in range(grid[0] * grid[1]):
                pi, pj = divmod(p, grid[1])
                r0, r1 = max(0, pi * PATCH_SIZE - RING), min(h, (pi + 1) * PATCH_SIZE + RING)
                c0, c1 = max(0, pj * PATCH_SIZE - RING), min(w, (pj + 1) * PATCH_SIZE + RING)
                yr = slice(max(0, r0 // LATENT_CELL - MARGIN_CELLS), min(hy, -(-r1 // LATENT_CELL) + MARGIN_CELLS))
                yc = slice(max(0, c0 // LATENT_CELL - MARGIN_CELLS), min(wy, -(-c1 // LATENT_CELL) + MARGIN_CELLS))
                crop = s.run(idx.flatten()[None], yr, yc)
                oy, ox = yr.start * LATENT_CELL, yc.start * LATENT_CELL
                got = crop[..., r0 - oy:r1 - oy, c0 - ox:c1 - ox]
                assert torch.allclose(got, full[..., r0:r1, c0:c1], atol=1e-5)

    def test_search_lowers_distortion_and_returns_uint8_grid(self, bank_backend):
        b = bank_backend
        x = image_tensor(synthetic_image(300, 260))
        ri = b.rate_index(0.01)
        y_hat = b.compress_latents(b.encode_latents(x, ri), ri)["y_hat"]
        res = search_bias(b, x, y_hat, ri, None, size=(260, 300), shortlist=4)
        assert res.indices.dtype == np.uint8 and res.indices.shape == (2, 2)
        with torch.no_grad():
            x_hat = b.synthesize(y_hat, ri, None, torch.from_numpy(res.indices.astype(np.int64)))
        sse = (x_hat[..., :260, :300].clamp(0, 1) - x[..., :260, :300]).pow(2).sum().item()
        assert sse <= res.sse_start + 1e-3
        assert sse == pytest.approx(res.sse_best, rel=1e-4)

    def test_empty_bank_is_skipped(self, vr_backend):
        x = image_tensor(synthetic_image(64, 64))
        ri = vr_backend.rate_index(0.01)
        res = search_bias(vr_backend, x, torch.zeros(1, SMALL["M"], 4, 4), ri)
        assert res.indices is None and "empty" in res.skipped


class TestRateControl:
    def test_target_rate_calibrates_on_the_real_file_and_steers_toward_the_aim(self):
        obj = TargetRate(aim=0.5, band=0.005, start_bpp=0.52, lmbda_range=(1e-3, 1e-1))
        obj.calibrate(RDCost(cost=1.0, bpp=0.50, mse=1e-3))  # the real file is 0.02 bpp above its estimate
        assert obj.predict(RDCost(1.0, 0.48, 1e-3)) == pytest.approx(0.50)
        inside, outside = RDCost(1.0, 0.481, 2e-3), RDCost(1.0, 0.45, 1e-4)
        assert obj.key(inside) < obj.key(outside)  # in the band beats a better PSNR outside it
        assert obj.next_lambda(1, 100, RDCost(1.0, 0.40, 1e-3), 0.01) > 0.01  # too small: raise λ
        assert obj.next_lambda(1, 100, RDCost(1.0, 0.60, 1e-3), 0.01) < 0.01
        assert obj.next_lambda(90, 100, RDCost(1.0, 0.60, 1e-3), 0.01) == 0.01  # held after STEER_UNTIL

    def test_target_quality_prefers_the_smallest_iterate_meeting_the_floor(self):
        obj = TargetQuality(aim=30.03, floor=30.0, start_psnr=30.5, lmbda_range=(1e-3, 1e-1))
        obj.calibrate(RDCost(1.0, 0.5, 10 ** (-30.4 / 10)))  # real PSNR 0.1 dB above the estimate
        meets_small = RDCost(1.0, 0.40, 10 ** (-29.95 / 10))
        meets_big = RDCost(1.0, 0.45, 10 ** (-30.5 / 10))
        misses = RDCost(1.0, 0.30, 10 ** (-29.8 / 10))
        assert obj.key(meets_small) < obj.key(meets_big) < obj.key(misses)

    def test_lands_within_tolerance_when_reachable(self, encoder):
        png = png_bytes(synthetic_image(128, 128))
        # random weights: the rate only rises steeply above λ ≈ 0.1, where ±2 % spans many bytes
        forward = encoder.encode(png, {"lmbda": 0.25, "preset": "fast"}).metadata["bpp"]
        target = round(forward * 1.05, 4)
        res = encoder.encode(png, {"target_bpp": target, "preset": "balanced", "refine_steps": 6,
                                   "lambda_steps": 3})
        m = res.metadata
        assert m["target_reached"] is True, m["stages"]
        assert abs(m["bpp"] - target) <= RATE_TOLERANCE * target
        assert "rounds" in m["stages"]["refine"]

    def test_fast_refines_only_when_the_forward_pass_cannot_get_down_to_the_target(self):
        # the shipped model: random weights put no bits in the latents at the lowest λ
        encoder = Encoder(device="cpu")
        png = png_bytes(synthetic_image(128, 128))
        lowest = encoder.encode(png, {"lmbda": LAMBDA_MIN, "preset": "fast"}).metadata["bpp"]
        reachable = encoder.encode(png, {"target_bpp": round(lowest * 1.5, 4), "preset": "fast"}).metadata
        assert "refine" not in reachable["stages"]
        res = encoder.encode(png, {"target_bpp": round(lowest * 0.8, 4), "preset": "fast"})
        m = res.metadata
        assert "below the forward pass" in m["stages"]["refine"]["reason"]
        assert m["bpp"] < lowest
        assert np.array_equal(decode(res.bitstream).rgb, res.reconstruction)

    def test_target_rate_refuses_an_aim_with_no_logarithm(self):
        with pytest.raises(ValueError, match="positive aim"):
            TargetRate(aim=-71.5, band=0.005, start_bpp=680.0, lmbda_range=(1e-3, 1e-1))

    @pytest.mark.parametrize("size, preset", [((1, 1), "balanced"), ((2, 3), "max"), ((48, 48), "balanced")])
    def test_a_target_below_the_later_stages_own_bytes_is_encoded_as_close_as_it_gets(self, encoder, weights, size,
                                                                                     preset):
        # 9 bytes of λ_k are 72 bpp on one pixel: reserving them for 0.5 bpp (or 0.01 bpp on
        # 48x48) left the refinement a negative aim, and log() of it ended the encode
        w, h = size
        target = 0.01 if size == (48, 48) else 0.5
        res = encoder.encode(png_bytes(synthetic_image(w, h)), {"target_bpp": target, "preset": preset,
                                                                "refine_steps": 4, "lambda_steps": 2})
        assert res.metadata["target_reached"] is False
        assert any("out of reach" in w for w in res.metadata["warnings"])
        assert np.array_equal(decode(res.bitstream, weights=str(weights)).rgb, res.reconstruction)

    def test_the_final_file_is_the_best_coded_one_when_the_reserved_bytes_go_unspent(self):
        # the shipped model, 48x48 at 0.5 bpp: the forward pass lands inside the tolerance; the
        # refinement, aiming 72/2304 bpp lower for λ_k that were then not kept, lands below it
        png = png_bytes(np.asarray(make_image(48, 48)))
        res = Encoder(device="cpu").encode(png, {"target_bpp": 0.5, "preset": "balanced"})
        m = res.metadata
        # which file wins depends on the CPU's kernels (bf16 refinement where AMX runs it), the rule does
        # not: the final file ranks no worse than the forward pass, so a forward pass inside the band
        # is a target reached (the "final" record is there only when the pick is not the last stage's)
        goal, forward = Goal("bpp", 0.5), m["stages"]["forward"]
        assert goal.rank(m["bpp"], m["psnr"]) <= goal.rank(forward["bpp"], forward["psnr"]), m["stages"]
        assert m["target_reached"] is True or not goal.inside(forward["bpp"]), m["stages"]
        if "final" in m["stages"]:
            assert m["stages"]["final"]["bpp"] == round(m["bpp"], 6)

    def test_unreachable_target_is_reported(self, encoder):
        res = encoder.encode(png_bytes(synthetic_image(64, 64)),
                             {"target_bpp": 7.5, "preset": "balanced", "refine_steps": 3, "lambda_steps": 2})
        assert res.metadata["target_reached"] is False
        assert any("out of reach" in w for w in res.metadata["warnings"])


class TestStages:
    @pytest.mark.parametrize("switches", [
        {"refine": True, "adapt_lambda": False, "bias_search": False},
        {"refine": False, "adapt_lambda": True, "bias_search": False},
        {"refine": False, "adapt_lambda": False, "bias_search": True},
        {"refine": True, "adapt_lambda": True, "bias_search": True},
    ])
    def test_switches_are_honoured(self, encoder, switches):
        progress = []
        res = encoder.encode(png_bytes(synthetic_image(64, 64)),
                             {"lmbda": 0.01, "preset": "balanced", "refine_steps": 4, "lambda_steps": 2, **switches},
                             progress=progress.append)
        m = res.metadata
        for stage, on in switches.items():
            stage_key = stage
            assert (stage_key in m["seconds"]) is on
            assert (stage_key in m["stages"]) is on
            if on:
                assert any(p["stage"] == stage for p in progress) or "skipped" in m["stages"][stage]
        if switches["bias_search"]:
            assert "empty" in m["stages"]["bias_search"]["skipped"]
        if switches["refine"]:
            s = m["stages"]["refine"]
            assert {"bpp", "psnr", "gain_db", "delta_bpp"} <= set(s)
        json.dumps(m)  # the worker stores it as JSON

    def test_all_stages_off_is_the_forward_pass(self, encoder):
        png = png_bytes(synthetic_image(64, 64))
        a = encoder.encode(png, {"lmbda": 0.01, "preset": "fast"})
        b = encoder.encode(png, {"lmbda": 0.01, "preset": "balanced", "refine": False, "adapt_lambda": False})
        assert a.bitstream == b.bitstream
        assert set(b.metadata["stages"]) == {"forward"}
