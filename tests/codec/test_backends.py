"""One set of contract tests for every backend: the default model and each zoo family.

Zoo models are built with small random weights (never downloaded).
"""

import pytest
import torch

from codec.backends import Backend, VariableRateBackend, ZooBackend, ZooVbrBackend
from codec.models.variable_rate import VariableRateHyperprior
from codec.models.zoo import TRAINING_LAMBDAS, VBR, ZOO
from tests.support.models import SMALL


def frozen(net):
    net.update(force=True)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def variable_rate() -> VariableRateBackend:
    torch.manual_seed(0)
    return VariableRateBackend(frozen(VariableRateHyperprior(**SMALL)))


def zoo(family: str) -> ZooBackend:
    from compressai.models import (FactorizedPrior, JointAutoregressiveHierarchicalPriors, MeanScaleHyperprior,
                                   ScaleHyperprior)

    cls = {"factorized": FactorizedPrior, "scale-hyperprior": ScaleHyperprior,
           "mean-scale-hyperprior": MeanScaleHyperprior, "autoregressive": JointAutoregressiveHierarchicalPriors}[family]
    slug = next(s for s, (_, f) in ZOO.items() if f == family)
    torch.manual_seed(0)
    nets = {q: frozen(cls(N=16, M=24)) for q in (2, 5)}
    return ZooBackend(slug, family, nets, TRAINING_LAMBDAS)


def vbr(slug: str) -> ZooVbrBackend:
    from codec.models.zoo import build_vbr

    torch.manual_seed(0)
    return ZooVbrBackend(slug, frozen(build_vbr(slug, vbr_state(slug))))


def vbr_state(slug: str) -> dict:
    from compressai.zoo.image_vbr import model_architectures

    from codec.models.zoo import VBR, VBR_ENTROPY_BOTTLENECK

    torch.manual_seed(0)
    kwargs = {"vr_entbttlnck": True} if slug in VBR_ENTROPY_BOTTLENECK else {}
    return model_architectures[VBR[slug]](N=16, M=24, **kwargs).state_dict()


BACKENDS = {"variable-rate": variable_rate, **{s: (lambda s=s: vbr(s)) for s in VBR}, **{f"zoo-{f}": (lambda f=f: zoo(f)) for f in
                                                 ("factorized", "scale-hyperprior", "mean-scale-hyperprior",
                                                  "autoregressive")}}


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def backend(request):
    return BACKENDS[request.param]()


def image(h=64, w=64):
    torch.manual_seed(1)
    return torch.rand(1, 3, h, w)


class TestBackendContract:
    def test_implements_the_protocol(self, backend):
        assert isinstance(backend, Backend)

    def test_rate_index_and_lambda_are_inverse_at_the_ends_of_the_range(self, backend):
        lo, hi = backend.rate_range()
        assert lo <= hi
        for k in (lo, hi):
            assert backend.rate_index(backend.rate_lambda(k)) == k
        assert backend.rate_lambda(lo) < backend.rate_lambda(hi) or lo == hi

    def test_decompress_reproduces_the_encoder_side_reconstruction(self, backend):
        x = image()
        lo, _ = backend.rate_range()
        with torch.no_grad():
            latents = backend.encode_latents(x, lo)
            coded = backend.compress_latents(latents, lo)
            decoded = backend.decompress(coded["strings"], coded["shape"], lo)
            if coded["y_hat"] is not None:
                assert torch.equal(backend.reconstruct(coded["y_hat"], lo).clamp(0, 1), decoded)
        assert decoded.shape == x.shape
        assert float(decoded.min()) >= 0.0 and float(decoded.max()) <= 1.0

    def test_rd_terms_are_differentiable_where_refinement_is_supported(self, backend):
        if not backend.supports_refine:
            assert backend.kind in ("autoregressive", "vbr")  # the families whose latents the model codes itself
            return
        x = image()
        lo, _ = backend.rate_range()
        latents = tuple(t.clone().requires_grad_(True) for t in backend.encode_latents(x, lo))
        x_hat, bits = backend.rd_terms(latents, lo, round_fn=lambda v, kind: v + (v.round() - v).detach())
        (bits.sum() + x_hat.square().mean()).backward()
        assert all(t.grad is not None for t in latents)

    def test_refine_view_computes_the_same_terms_and_leaves_the_coding_network_alone(self, backend):
        if not backend.supports_refine:
            return
        x = image()
        lo, _ = backend.rate_range()
        view = backend.refine_view(lo)
        assert view is backend.refine_view(lo)  # made once
        with torch.no_grad():
            latents = backend.encode_latents(x, lo)
            x_ref, bits_ref = backend.rd_terms(latents, lo)
            x_view, bits_view = view.rd_terms(latents, lo)
        assert torch.allclose(x_view, x_ref, atol=1e-5) and torch.allclose(bits_view, bits_ref, rtol=1e-5)
        # the coded file's synthesis keeps the layout every decoder loads; the view's copy is channels_last
        def first_conv(b):
            net = b.net(lo) if isinstance(b, ZooBackend) else b.net
            return next(m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)))

        assert first_conv(backend).weight.is_contiguous()
        conv = first_conv(view)
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)


class TestRegistry:
    def test_every_zoo_model_and_vbr_model_is_registered_once(self):
        from codec.registry import MODELS

        assert set(ZOO) | set(VBR) | {"metalic-vr", "metalic-vr-base", "metalic-vr-ecg"} == set(MODELS)

    @pytest.mark.parametrize("slug", sorted(VBR))
    def test_vbr_models_load_through_the_registry_from_a_local_file(self, tmp_path, slug):
        from codec.weights import load_model

        path = tmp_path / f"{slug}.pth"
        torch.save(vbr_state(slug), path)
        loaded = load_model(slug, "cpu", str(path))
        assert type(loaded.backend) is ZooVbrBackend and loaded.name == slug

    def test_fixed_rate_zoo_model_loads_through_the_registry(self, tmp_path):
        from compressai.models import MeanScaleHyperprior

        from codec.weights import load_model

        torch.manual_seed(0)
        path = tmp_path / "mbt2018-mean-3-e2e7a6e7.pth"
        torch.save(MeanScaleHyperprior(N=16, M=24).state_dict(), path)
        loaded = load_model("mbt2018-mean", "cpu", str(path))
        assert type(loaded.backend) is ZooBackend and loaded.backend.rate_range() == (3, 3)

    def test_weights_and_zoo_modules_do_not_import_each_other(self):
        import ast
        from pathlib import Path

        zoo_source = Path(__import__("codec.models.zoo").models.zoo.__file__).read_text()
        imported = {node.module for node in ast.walk(ast.parse(zoo_source)) if isinstance(node, ast.ImportFrom)}
        assert "weights" not in imported


def test_a_vbr_model_encodes_to_a_target_through_the_pipeline(tmp_path):
    """The rate search walks a VBR model's levels and the file decodes to what the encoder measured."""
    import io

    from codec import bitstream
    from codec.pipeline import Encoder, decode
    from tests.support.images import make_image

    slug = "bmshj2018-hyperprior-vbr"
    path = tmp_path / f"{slug}.pth"
    torch.save(vbr_state(slug), path)
    enc = Encoder(slug, device="cpu", weights=str(path))
    png = io.BytesIO()
    make_image(64, 64).save(png, "PNG")
    result = enc.encode(png.getvalue(), {"target_bpp": 0.5, "preset": "balanced", "refine_steps": 3, "model": slug})
    assert result.metadata["stages"]["refine"].get("skipped")
    p = bitstream.unpack(result.bitstream)
    lo, hi = enc.backend.rate_range()
    assert lo <= p.rate_index <= hi
    assert result.metadata["lmbda"] == enc.backend.rate_lambda(p.rate_index)
    assert (decode(result.bitstream, weights=str(path)).rgb == result.reconstruction).all()
