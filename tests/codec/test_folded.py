"""codec.adapt.folded: the refinement's folded synthesis computes what the model's does."""

import pytest
import torch
import torch.nn.functional as F

from codec.adapt.folded import FoldedSynthesis, foldable, folded_view
from codec.adapt.refine import refine_latents
from codec.backends import VariableRateBackend
from tests.support.models import small_net


def backend() -> VariableRateBackend:
    net = small_net(seed=3)
    net.update(force=True)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return VariableRateBackend(net)


@pytest.mark.parametrize("shape", [(4, 4), (3, 5)])
def test_the_folded_synthesis_and_its_gradient_are_the_models(shape):
    b = backend()
    ri = b.rate_index(0.01)
    lmbda = b._lmbda(ri)
    folded = FoldedSynthesis(b.net, lmbda)
    torch.manual_seed(1)
    y = (torch.randn(1, b.net.M, *shape) * 3).round()
    target = torch.rand(1, 3, 16 * shape[0], 16 * shape[1])
    outs = []
    for fn in (lambda v: b.net.synthesize(v, lmbda), folded):
        yi = y.clone().requires_grad_(True)
        out = fn(yi)
        (out - target).pow(2).mean().backward()
        outs.append((out.detach(), yi.grad))
    (x_ref, g_ref), (x_got, g_got) = outs
    assert torch.allclose(x_got, x_ref, atol=1e-5)
    assert torch.allclose(g_got, g_ref, rtol=1e-4, atol=1e-7)
    # an image of another size gets its own constants
    y2 = (torch.randn(1, b.net.M, 2, 3) * 3).round()
    assert torch.allclose(folded(y2), b.net.synthesize(y2, lmbda), atol=1e-5)


def test_the_folded_view_keeps_the_models_synthesis_for_what_it_did_not_fold():
    b = backend()
    lo, hi = b.rate_range()
    view = folded_view(b, lo)
    assert view is folded_view(b, lo) and view is not b.refine_view(lo)
    torch.manual_seed(2)
    y = (torch.randn(1, b.net.M, 3, 3) * 3).round()
    lk = torch.full((1, 4), b.rate_lambda(hi))
    with torch.no_grad():
        for args in ((b._lmbda(lo), lk), (b._lmbda(hi),)):  # other λ_k, another λ: the model's own
            assert torch.allclose(view.net.synthesize(y, *args), b.refine_view(lo).net.synthesize(y, *args), atol=1e-6)
    assert folded_view(b, hi) is not view  # made for the new rate index


def test_a_network_with_other_layers_is_not_folded():
    from codec.models.gated import GatedVariableRateHyperprior
    from tests.support.models import SMALL

    assert foldable(backend().net)
    assert not foldable(GatedVariableRateHyperprior(**SMALL))


def test_refinement_steps_run_on_the_folded_view_and_lower_the_cost():
    b = backend()
    ri = b.rate_index(0.01)
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        latents = b.encode_latents(x, ri)
    res = refine_latents(b, x, latents, ri, 6, eval_every=3, amp=False)
    assert b.refine_view(ri).__dict__.get("_folded", (None,))[0] == ri
    assert res.best.cost <= res.start.cost
