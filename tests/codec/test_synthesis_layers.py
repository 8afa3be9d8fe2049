"""codec.layers.synthesis: the faster synthesis layers compute the plain ones, and streams keep their version's rule."""

import pytest
import torch
import torch.nn.functional as F
from compressai.layers import GDN
from torch import nn

from codec import bitstream
from codec.backends import VariableRateBackend
from codec.layers.synthesis import inverse_gdn, is_deconv5, subpixel_deconv, subpixel_weight
from tests.support.models import small_net
from tests.support.threads import torch_threads


def test_the_subpixel_weights_give_the_transposed_convolution():
    torch.manual_seed(0)
    w, x = torch.randn(5, 3, 5, 5), torch.randn(1, 5, 7, 9)
    want = F.conv_transpose2d(x, w, stride=2, padding=2, output_padding=1)
    got = F.pixel_shuffle(F.conv2d(x, subpixel_weight(w), padding=1), 2)
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_subpixel_deconv_is_the_layer_with_its_bias(layout):
    torch.manual_seed(1)
    conv = nn.ConvTranspose2d(8, 3, 5, stride=2, padding=2, output_padding=1)
    x = torch.randn(2, 8, 6, 11).contiguous(memory_format=layout)
    assert is_deconv5(conv)
    with torch.no_grad():
        assert torch.allclose(subpixel_deconv(conv, x), conv(x), atol=1e-5)


def test_only_the_plain_5x5_stride_2_layer_is_folded():
    assert not is_deconv5(nn.ConvTranspose2d(8, 3, 3, stride=2, padding=1, output_padding=1))
    assert not is_deconv5(nn.ConvTranspose2d(8, 3, 5, stride=1, padding=2))
    assert not is_deconv5(nn.Conv2d(8, 3, 5, stride=2, padding=2))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_inverse_gdn_is_compressais_forward_and_backward(layout):
    torch.manual_seed(2)
    gdn = GDN(6, inverse=True)
    with torch.no_grad():  # away from the fresh identity-like start
        gdn.gamma.add_(0.1 * torch.rand_like(gdn.gamma))
        gdn.beta.add_(0.2 * torch.rand_like(gdn.beta))
    x = torch.randn(2, 6, 5, 7).contiguous(memory_format=layout).requires_grad_(True)
    want = gdn(x)
    got = inverse_gdn(gdn, x)
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-6)
    g = torch.randn_like(want)
    (gx_want,) = torch.autograd.grad(want, x, g)
    (gx_got,) = torch.autograd.grad(got, x, g)
    assert torch.allclose(gx_got, gx_want, atol=1e-5)
    with torch.no_grad():  # the in-place inference form
        assert torch.allclose(inverse_gdn(gdn, x), want, atol=1e-6)


@pytest.fixture(scope="module")
def coded():
    """A small model's strings and ŷ for an image of two strips' size (64x48 latent cells: 768 px wide)."""
    net = small_net(seed=5)
    net.update(force=True)
    net.eval()
    backend = VariableRateBackend(net)
    ri = backend.rate_index(0.01)
    torch.manual_seed(6)
    x = torch.rand(1, 3, 256, 768)
    with torch.no_grad():
        out = net.compress_latents(*backend.encode_latents(x, ri))
    return backend, ri, out


def test_each_version_decodes_by_its_own_synthesis_rule(coded):
    backend, ri, out = coded
    lam = backend._lmbda(ri)
    with torch.inference_mode(), torch_threads(1):
        fast = backend.net.reconstruct(out["y_hat"], lam)
        plain = backend.net.reconstruct(out["y_hat"], lam, legacy_synthesis=True)
        decoded = {v: backend.decompress(out["strings"], out["shape"], ri, version=v) for v in bitstream.VERSIONS}
    assert not torch.equal(fast, plain) and torch.allclose(fast, plain, atol=1e-5)  # other last bits, same image
    assert torch.equal(decoded[3], fast) and torch.equal(decoded[2], plain)
    assert torch.equal(backend.reconstruct(out["y_hat"], ri), fast)  # the encoder measures what version 3 decodes
