"""One set of contract tests for every backend: the default model and each zoo family.

Zoo models are built with small random weights (never downloaded).
"""

import pytest
import torch

from codec.backends import Backend, VariableRateBackend, ZooBackend
from codec.models.variable_rate import VariableRateHyperprior
from codec.models.zoo import TRAINING_LAMBDAS, ZOO

SMALL = {"N": 16, "M": 32, "lmbda_min": 2.5e-4, "lmbda_max": 0.25}


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


BACKENDS = {"variable-rate": variable_rate, **{f"zoo-{f}": (lambda f=f: zoo(f)) for f in
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
                assert torch.equal(backend.synthesize(coded["y_hat"], lo).clamp(0, 1), decoded)
        assert decoded.shape == x.shape
        assert float(decoded.min()) >= 0.0 and float(decoded.max()) <= 1.0

    def test_rd_terms_are_differentiable_where_refinement_is_supported(self, backend):
        if not backend.supports_refine:
            assert backend.kind == "autoregressive"  # the only family whose latents the model codes itself
            return
        x = image()
        lo, _ = backend.rate_range()
        latents = tuple(t.clone().requires_grad_(True) for t in backend.encode_latents(x, lo))
        x_hat, bits = backend.rd_terms(latents, lo, round_fn=lambda v, kind: v + (v.round() - v).detach())
        (bits.sum() + x_hat.square().mean()).backward()
        assert all(t.grad is not None for t in latents)
