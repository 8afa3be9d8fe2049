"""The default model's contracts, the registry and the zoo backends."""

import numpy as np
import pytest
import torch
from compressai.models import FactorizedPrior, MeanScaleHyperprior, ScaleHyperprior

from codec.backends import VariableRateBackend, ZooBackend
from codec.errors import ModelError
from codec.models.variable_rate import VariableRateHyperprior
from codec.registry import MODELS
from codec.weights import load_model


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    m = VariableRateHyperprior(N=16, M=24).eval()
    m.update(force=True)
    return m


def lam(v):
    return torch.tensor([v])


class TestVariableRateHyperprior:
    def test_forward_returns_reconstruction_and_likelihoods(self, net):
        out = net(torch.rand(2, 3, 64, 64), torch.tensor([1e-3, 1e-1]))
        assert out["x_hat"].shape == (2, 3, 64, 64)
        assert set(out["likelihoods"]) == {"y", "z"}

    def test_compress_y_hat_equals_decompress_y_hat(self, net):
        y_g, z = net.encode_latents(torch.rand(1, 3, 128, 64), lam(0.01))
        out = net.compress_latents(y_g, z)
        assert torch.equal(out["y_hat"], net.decompress_latents(out["strings"], out["shape"]))

    def test_gain_grows_with_lambda(self, net):
        g = net.gain(torch.tensor([1e-4, 1e-2, 1.0]))
        assert (g[1] > g[0]).all() and (g[2] > g[1]).all()

    def test_lambda_k_default_equals_lambda(self, net):
        y = torch.randn(1, 24, 4, 4)
        a = net.synthesize(y, lam(0.02))
        b = net.synthesize(y, lam(0.02), torch.full((1, 4), 0.02))
        assert torch.equal(a, b)

    def test_entropy_parameters_on_cpu_even_for_other_dtype(self, net):
        y_g, z = net.encode_latents(torch.rand(1, 3, 64, 64), lam(0.01))
        ref = net.compress_latents(y_g, z)
        net64 = VariableRateHyperprior(N=16, M=24)
        net64.load_state_dict(net.state_dict())
        net64.update(force=True)
        net64 = net64.double()  # stands in for a model held on another device/dtype
        assert net64.compress_latents(y_g, z)["strings"] == ref["strings"]


class TestBiasBank:
    def test_index_zero_decodes_as_no_bank(self, net):
        y = torch.randn(1, 24, 20, 20)  # 320x320 image: 2x2 patches
        net.bias_bank.bank3[5] = 0.25
        try:
            idx = torch.zeros(2, 2, dtype=torch.long)
            assert torch.equal(net.synthesize(y, lam(0.01)), net.synthesize(y, lam(0.01), None, idx))
        finally:
            net.bias_bank.bank3.zero_()

    def test_known_offset_moves_only_its_patch(self, net):
        y = torch.randn(1, 24, 20, 20)
        net.bias_bank.bank3[5] = torch.tensor([0.25, -0.5, 0.125])
        try:
            idx = torch.zeros(2, 2, dtype=torch.long)
            idx[0, 1] = 5
            d = net.synthesize(y, lam(0.01), None, idx) - net.synthesize(y, lam(0.01))
            patch = d[0, :, :256, 256:]
            assert torch.allclose(patch, torch.tensor([0.25, -0.5, 0.125])[:, None, None].expand_as(patch), atol=1e-6)
            d[0, :, :256, 256:] = 0
            assert d.abs().max() == 0
        finally:
            net.bias_bank.bank3.zero_()


class TestRegistry:
    def test_every_name_has_one_spelling(self):
        assert all(n == n.lower() and "_" not in n for n in MODELS)
        assert MODELS["metalic-vr"] is VariableRateHyperprior

    def test_unknown_model_is_a_model_error(self):
        with pytest.raises(ModelError, match="unknown model"):
            load_model("no-such-model")

    def test_default_model_backend_type(self):
        assert type(load_model("metalic-vr").backend) is VariableRateBackend


class TestZooBackends:
    @pytest.mark.parametrize("slug, cls, kw", [
        ("bmshj2018-factorized", FactorizedPrior, {"N": 16, "M": 24}),
        ("bmshj2018-hyperprior", ScaleHyperprior, {"N": 16, "M": 24}),
        ("mbt2018-mean", MeanScaleHyperprior, {"N": 16, "M": 24}),
    ])
    def test_local_weights_round_trip(self, tmp_path, slug, cls, kw):
        from PIL import Image

        from codec.models.zoo import ZOO, _url_name
        from codec.pipeline import Encoder, decode

        torch.manual_seed(0)
        torch.save(cls(**kw).state_dict(), tmp_path / _url_name(ZOO[slug][0], 3))
        enc = Encoder(slug, device="cpu", weights=str(tmp_path))
        assert type(enc.backend) is ZooBackend
        rgb = (np.random.default_rng(0).random((40, 70, 3)) * 255).astype(np.uint8)
        res = enc.encode(Image.fromarray(rgb), {"preset": "fast", "model": slug})
        assert res.metadata["model"] == slug
        out = decode(res.bitstream, weights=str(tmp_path))
        assert np.array_equal(out.rgb, res.reconstruction)

    def test_missing_zoo_weights_is_a_clear_error(self, tmp_path):
        with pytest.raises(ModelError, match="never downloads"):
            load_model("mbt2018-mean", "cpu", str(tmp_path))


class TestScaleIndexes:
    def test_is_compressais_build_indexes_on_every_boundary_and_beyond(self):
        from codec.models.variable_rate import scale_indexes

        gc = load_model("metalic-vr").backend.net.gaussian_conditional
        table = gc.scale_table
        below = torch.nextafter(table, torch.zeros_like(table))
        above = torch.nextafter(table, torch.full_like(table, float("inf")))
        special = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -1.0, 1e-30, 1e30])
        rng = torch.Generator().manual_seed(0)
        spread = torch.exp(torch.empty(4000).uniform_(-4, 7, generator=rng))
        scales = torch.cat([table, below, above, special, spread]).view(1, -1, 1, 1).expand(1, -1, 3, 2)
        got = scale_indexes(gc, scales)
        want = gc.build_indexes(scales)
        assert got.dtype == want.dtype == torch.int32
        assert torch.equal(got, want)
