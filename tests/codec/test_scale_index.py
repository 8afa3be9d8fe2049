"""Scale indexes that every machine computes alike (codec.models.scale_index)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from codec.models import scale_index
from codec.models.variable_rate import scale_indexes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def net():
    from codec.weights import load_model

    return load_model("metalic-vr").backend.net


def truth_indexes(net, z_hat):
    """Every layer of h_s in float64: the value each machine's indexes must agree with."""
    import copy

    h64 = copy.deepcopy(net.h_s).double().eval()
    with torch.inference_mode():
        scales = h64(z_hat.double()).chunk(2, 1)[0]
    gc = net.gaussian_conditional
    return torch.searchsorted(gc.scale_table[:-1].double(), scales.clamp_min(float(gc.lower_bound_scale.bound))).int()


def z_hats(net, seed):
    """Rounded hyper-latents around the entropy bottleneck's medians, at a few spreads (rates)."""
    g = torch.Generator().manual_seed(seed)
    med = net.entropy_bottleneck._get_medians().detach()
    return [torch.round(torch.randn(1, net.N, 6, 10, generator=g) * s) + med for s in (0.5, 2.0, 6.0)]


class TestNearEdges:
    def test_marks_scales_within_the_margin_of_any_edge_only(self):
        edges = torch.tensor([0.11, 0.2, 0.4])
        m = 1e-4
        scales = torch.tensor([0.11, 0.11 * (1 + 0.5 * m), 0.11 * (1 - 0.5 * m), 0.11 * (1 + 2 * m), 0.3,
                               0.4 * (1 - 0.5 * m), 0.4 * (1 + 3 * m), 0.01, -1.0, 50.0, float("nan")])
        want = [True, True, True, False, False, True, False, False, False, False, False]
        assert scale_index.near_edges(scales, edges, m).tolist() == want


class TestSettle:
    def test_noisy_float32_scales_get_the_exact_values_indexes(self):
        """Another machine's float32 scales (relative error 1e-6) index as the float64 values do."""
        from codec.weights import load_model

        gc = load_model("metalic-vr").backend.net.gaussian_conditional
        edges, floor = gc.scale_table[:-1].contiguous(), float(gc.lower_bound_scale.bound)
        g = torch.Generator().manual_seed(1)
        # scales on and right beside every edge, and spread over the whole table
        beside = edges.double()[None, :] * (1 + torch.linspace(-3e-6, 3e-6, 7, dtype=torch.float64))[:, None]
        spread = torch.exp(torch.empty(20000, dtype=torch.float64).uniform_(-3, 6, generator=g))
        truth = torch.cat([beside.reshape(-1), spread]).view(1, -1, 1, 1)
        want = torch.searchsorted(edges.double(), truth.clamp_min(floor)).int()
        flips = 0
        for trial in range(5):
            noise = torch.empty_like(truth).uniform_(-1e-6, 1e-6, generator=g)
            noisy = (truth * (1 + noise)).float()
            plain = scale_indexes(gc, noisy)
            flips += int((plain != want).sum())
            got = scale_index.settle(plain.clone(), noisy, edges, floor, lambda near: truth[near])
            assert torch.equal(got, want)
        assert flips > 0  # without settling, the noise does move indexes across edges


class TestRecompute:
    def test_equals_the_float64_convolution_where_asked(self):
        g = torch.Generator().manual_seed(2)
        conv = nn.Conv2d(12, 10, 3, padding=1)
        x64 = torch.randn(2, 12, 5, 7, generator=g, dtype=torch.float64)
        where = torch.rand(2, 10, 5, 7, generator=g) < 0.3
        where[0, 0, 0, 0] = where[1, 9, 4, 6] = True  # corners: the zero padding
        want = F.conv2d(x64, conv.weight.double(), conv.bias.double(), padding=1)[where]
        got = scale_index.recompute(x64, conv, where)
        assert got.dtype == torch.float64
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)

    def test_refuses_a_last_layer_it_does_not_know(self):
        with pytest.raises(NotImplementedError):
            scale_index.recompute(torch.zeros(1, 4, 3, 3, dtype=torch.float64), nn.Conv2d(4, 2, 5, padding=2),
                                  torch.ones(1, 2, 3, 3, dtype=torch.bool))


class TestEntropyParameters:
    @pytest.mark.parametrize("seed", [0, 1])
    def test_indexes_are_the_all_float64_ones(self, net, seed):
        for z in z_hats(net, seed):
            with torch.inference_mode():
                indexes, means = net.entropy_parameters(z)
            assert indexes.dtype == torch.int32 and means.dtype == torch.float32
            assert torch.equal(indexes, truth_indexes(net, z))

    def test_another_isa_computes_the_same_indexes(self, net, tmp_path):
        """oneDNN limited to SSE4.1 kernels (other float32 bits) in a fresh process: same indexes."""
        zs = z_hats(net, 3)
        np.save(tmp_path / "z.npy", torch.cat(zs).numpy())
        script = (
            "import sys, numpy as np, torch\n"
            "from codec.weights import load_model\n"
            "net = load_model('metalic-vr').backend.net\n"
            "z = torch.from_numpy(np.load(sys.argv[1]))\n"
            "with torch.inference_mode():\n"
            "    idx = torch.cat([net.entropy_parameters(z[i:i + 1])[0] for i in range(len(z))])\n"
            "np.save(sys.argv[2], idx.numpy())\n"
        )
        env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "SSE41", "PYTHONPATH": str(ROOT)}
        subprocess.run([sys.executable, "-c", script, str(tmp_path / "z.npy"), str(tmp_path / "idx.npy")],
                       env=env, check=True, cwd=ROOT, timeout=300)
        with torch.inference_mode():
            here = torch.cat([net.entropy_parameters(z)[0] for z in zs])
        assert np.array_equal(np.load(tmp_path / "idx.npy"), here.numpy())
