"""The strips of codec.tiling: a function of the latent size only, and the same bits at any thread count."""

import pytest
import torch

from codec import tiling
from codec.weights import load_model
from tests.support.threads import torch_threads

SHAPES = [(4, 4), (6, 10), (32, 48), (48, 32), (24, 50), (40, 97), (64, 20)]
"""Latent cells (h, w): one strip (the golden images), kodak both ways, odd cuts, four strips."""


@pytest.fixture(scope="module")
def net():
    return load_model("metalic-vr").backend.net


def _latent(net, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, net.M, h, w, generator=g) * 3).round()


@pytest.mark.parametrize("h,w", [(1, 1), (5, 23), (32, 48), (48, 32), (47, 200), (135, 240), (1000, 3)])
def test_the_strips_own_every_cell_once_and_read_their_halo(h, w):
    strips = tiling.plan(h, w)
    assert len(strips) & (len(strips) - 1) == 0 and len(strips) <= tiling.MAX_STRIPS
    owned = torch.zeros(h, w, dtype=torch.int64)
    for s in strips:
        owned[s.rows, s.cols] += 1
        assert s.rows_in.start == max(0, s.rows.start - (tiling.HALO_BEFORE if h > w else 0))
        assert s.cols_in.stop == min(w, s.cols.stop + (0 if h > w else tiling.HALO_AFTER))
    assert bool((owned == 1).all())


def test_a_kodak_latent_is_cut_in_two():
    assert len(tiling.plan(32, 48)) == len(tiling.plan(48, 32)) == 2


@pytest.mark.parametrize("h,w", SHAPES)
def test_channels_last_synthesis_equals_the_contiguous_one(net, h, w):
    # the layout reconstruct runs in; bit-identical on every layer of these shapes
    y, lam = _latent(net, h, w), torch.tensor([0.01])
    with torch.inference_mode(), torch_threads(1):
        a = net.synthesize(y, lam)
        b = net.synthesize(y.contiguous(memory_format=torch.channels_last), lam)
    assert torch.equal(a, b)


@pytest.mark.parametrize("h,w", SHAPES)
def test_reconstruct_gives_the_same_bits_on_one_two_and_three_threads(net, h, w):
    y, lam = _latent(net, h, w, seed=1), torch.tensor([0.02])
    outs = []
    for n in (1, 2, 3):
        with torch.inference_mode(), torch_threads(n):
            outs.append(net.reconstruct(y, lam))
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


@pytest.mark.parametrize("h,w", SHAPES)
def test_reconstruct_is_the_whole_image_synthesis(net, h, w):
    # one strip: the same bits; several: the layers may round otherwise on a narrower input
    # (the 64/192 default differs by up to 1.7e-5 on 4 of 1.2 million values at 32x48: under 1/200 of a level)
    # (the strips are checked on the plain layers synthesize runs; the faster ones of container
    # version 3 are the same sums in another order)
    y, lam = _latent(net, h, w, seed=2), torch.tensor([0.005])
    with torch.inference_mode(), torch_threads(1):
        full = net.synthesize(y, lam).clamp(0, 1)
        tiled = net.reconstruct(y, lam, legacy_synthesis=True)
        fast = net.reconstruct(y, lam)
    if len(tiling.plan(h, w)) == 1:
        assert torch.equal(full, tiled)
    assert torch.allclose(full, tiled, atol=5e-5, rtol=0)
    assert torch.allclose(full, fast, atol=5e-5, rtol=0)


def test_reconstruct_with_bias_indices_and_lambda_k_across_strips(net):
    from codec.layers import BiasBank

    h, w = 32, 48
    y, lam = _latent(net, h, w, seed=3), torch.tensor([0.01])
    idx = torch.randint(0, 256, BiasBank.grid_shape(h * 16, w * 16), generator=torch.Generator().manual_seed(4))
    lk = torch.tensor([[0.004, 0.01, 0.02, 0.05]])
    with torch.inference_mode(), torch_threads(1):
        full = net.synthesize(y, lam, lk, idx).clamp(0, 1)
        one = net.reconstruct(y, lam, lk, idx)
    with torch.inference_mode(), torch_threads(2):
        two = net.reconstruct(y, lam, lk, idx)
    assert torch.equal(one, two)
    assert torch.allclose(full, one, atol=1e-5, rtol=0)


def test_reconstruct_keeps_the_callers_thread_count(net):
    with torch.inference_mode(), torch_threads(2):
        net.reconstruct(_latent(net, 32, 48), torch.tensor([0.01]))
        assert torch.get_num_threads() == 2
