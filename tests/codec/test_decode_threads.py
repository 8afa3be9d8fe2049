"""The decoder gives the same bytes whatever torch's thread count and the input's memory layout.

The encoder's own check decode, the API's decode and a user's decode must
agree exactly, and they need not run with the same number of threads (the
service's processes run with one, a worker or a laptop with all its cores).
"""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from codec.pipeline import decode
from tests.codec.test_golden import GOLDEN_DIR, RECORD
from tests.support.threads import torch_threads


def _decoded(data: bytes, threads: int) -> bytes:
    with torch_threads(threads):
        return decode(data, device="cpu").rgb.tobytes()


@pytest.mark.parametrize("name", sorted(RECORD["streams"]))
def test_golden_streams_decode_to_the_same_bytes_on_one_and_two_threads(name):
    data = (GOLDEN_DIR / RECORD["streams"][name]["file"]).read_bytes()
    assert _decoded(data, 1) == _decoded(data, 2)


def test_a_fresh_encode_decodes_identically_on_one_and_two_threads(encoder):
    # wider shapes than the golden images: more of the convolutions' work to split between threads
    rng = np.random.default_rng(3)
    base = np.linspace(0, 255, 128 * 256 * 3).reshape(128, 256, 3)
    rgb = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    result = encoder.encode(buf.getvalue(), {"preset": "fast", "target_bpp": 0.5})
    one, two = _decoded(result.bitstream, 1), _decoded(result.bitstream, 2)
    assert one == two == result.reconstruction.tobytes()


def test_an_encode_cut_into_strips_decodes_identically_on_one_two_and_three_threads(encoder):
    # 768 pixels wide: a 48-cell latent, two codec.tiling strips in the encoder's measurement and the decode
    from codec import tiling

    rng = np.random.default_rng(5)
    base = np.linspace(0, 255, 64 * 768 * 3).reshape(64, 768, 3)
    rgb = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    assert len(tiling.plan(4, 48)) == 2
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    with torch_threads(2):  # the encoder's measurement runs its strips side by side
        result = encoder.encode(buf.getvalue(), {"preset": "fast", "lmbda": 0.01})
    decoded = [_decoded(result.bitstream, n) for n in (1, 2, 3)]
    assert decoded[0] == decoded[1] == decoded[2] == result.reconstruction.tobytes()


def test_the_synthesis_is_layout_independent():
    # channels_last input (what a caller holding NHWC tensors passes) gives the same pixels
    from codec.weights import load_model

    net = load_model("metalic-vr").backend.net
    y = torch.randn(1, net.M, 8, 12, generator=torch.Generator().manual_seed(0)) * 3
    lam = torch.tensor([0.01])
    with torch.inference_mode(), torch_threads(1):
        a = net.synthesize(y.round(), lam)
        b = net.synthesize(y.round().contiguous(memory_format=torch.channels_last), lam)
    assert torch.equal(a, b.contiguous())


def test_the_entropy_parameters_are_the_same_bits_on_one_two_and_three_threads():
    # the hyper-synthesis' last two layers run in halves of their output channels, side by side
    from codec.weights import load_model

    net = load_model("metalic-vr").backend.net
    g = torch.Generator().manual_seed(7)
    z_hat = (torch.randn(1, net.N, 8, 12, generator=g) * 2).round()
    outs = []
    for n in (1, 2, 3):
        with torch.inference_mode(), torch_threads(n):
            outs.append(net.entropy_parameters(z_hat))
    for indexes, means in outs[1:]:
        assert torch.equal(indexes, outs[0][0]) and torch.equal(means, outs[0][1])
    head, last, _ = net._cpu_hyper_synthesis()
    with torch.inference_mode(), torch_threads(1):  # the halves are the whole layers' output
        assert torch.equal(outs[0][1], last(head(z_hat.double()).float()).chunk(2, 1)[1])
