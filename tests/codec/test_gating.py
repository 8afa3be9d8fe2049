"""Energy-based channel gating (codec/layers/gating.py) and the gated default model (codec/models/gated.py)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from codec import bitstream
from codec.layers import EnergyGate, GatedConv2d, GatedConvTranspose2d, gated
from codec.layers.gating import ALPHA_START
from codec.models.gated import GatedVariableRateHyperprior, transform_flops
from codec.models.variable_rate import VariableRateHyperprior
from codec.pipeline import Encoder, decode
from tests.support.models import SMALL, small_net

from .conftest import make_image, png_bytes

ROOT = Path(__file__).resolve().parents[2]


def features(b=2, c=16, hw=12, seed=0) -> torch.Tensor:
    """Channels whose energies span four orders of magnitude, one of them all zero."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, hw, hw, generator=g) * torch.logspace(-2, 0, c).view(1, c, 1, 1)
    x[:, 3] = 0
    return x


def set_alpha(net, value: float) -> None:
    with torch.no_grad():
        for g in net.gates().values():
            g.alpha.fill_(value)


class TestEnergyGate:
    def test_at_the_start_only_the_all_zero_channel_is_gated(self):
        gate = EnergyGate(16).eval()
        g = gate(features())
        assert g[:, 3].eq(0).all() and g[:, [i for i in range(16) if i != 3]].eq(1).all()

    def test_the_gate_ignores_the_scale_of_the_features(self):
        gate = EnergyGate(16, alpha=-1.0).eval()
        x = features()
        assert torch.equal(gate(x), gate(x * 64))  # a power of two: the same relative energies, bit for bit

    def test_a_larger_alpha_gates_more_channels(self):
        x = features()
        counts = [EnergyGate(16, alpha=a).eval()(x).sum().item() for a in (-12, -4, -2, 0, 1)]
        assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]

    def test_the_threshold_offsets_cannot_move_the_level(self):
        # τ enters with its mean removed: shifting every τ_c together changes nothing
        gate = EnergyGate(16, alpha=-1.0).eval()
        x = features()
        before = gate(x)
        with torch.no_grad():
            gate.tau.add_(5.0)
        assert torch.equal(gate(x), before)

    def test_training_form_is_hard_forward_with_a_gradient_to_every_gate_parameter(self):
        gate = EnergyGate(16, alpha=-1.0).train()
        with torch.no_grad():
            gate.kernel.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0, 0.2]))
            gate.tau.normal_(0, 0.5)
        g = gate(features())
        assert set(g.detach().unique().tolist()) <= {0.0, 1.0}
        (g * torch.arange(16.0)).sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in (gate.alpha, gate.kernel, gate.tau))

    def test_even_kernel_is_refused(self):
        with pytest.raises(ValueError, match="odd"):
            EnergyGate(8, kernel_size=4)


class TestGatedConv:
    @pytest.mark.parametrize("make", [
        lambda: nn.Conv2d(16, 8, 5, stride=2, padding=2),
        lambda: nn.ConvTranspose2d(16, 8, 5, stride=2, padding=2, output_padding=1),
    ])
    @pytest.mark.parametrize("alpha", [-2.0, 0.0, 30.0])
    def test_sliced_inference_equals_the_masked_dense_convolution(self, make, alpha):
        torch.manual_seed(0)
        conv = gated(make(), alpha=alpha).eval()
        x = features(b=3)
        x[1] = x[1].flip(0)  # another image, another mask: the batch is sliced image by image
        with torch.no_grad():
            mask = conv.gate(x)
            dense = conv._dense(x * mask[:, :, None, None], conv.weight)
            out = conv(x)
        assert out.shape == dense.shape
        assert not torch.equal(mask[0], mask[1]) or alpha == 30.0
        # the same sum over fewer terms: equal up to the order of the float additions, which
        # oneDNN picks by channel count (the encoder and the decoder both run the sliced form)
        torch.testing.assert_close(out, dense, rtol=1e-5, atol=1e-6)

    def test_every_channel_gated_leaves_the_bias(self):
        conv = gated(nn.Conv2d(16, 8, 3, padding=1), alpha=30.0).eval()
        with torch.no_grad():
            out = conv(features())
        assert torch.equal(out, conv.bias.view(1, 8, 1, 1).expand_as(out))

    def test_the_twin_holds_the_same_parameters(self):
        conv = nn.ConvTranspose2d(8, 4, 5, stride=2, padding=2, output_padding=1)
        twin = gated(conv)
        assert type(twin) is GatedConvTranspose2d and twin.weight is conv.weight and twin.bias is conv.bias
        assert type(gated(nn.Conv2d(3, 4, 3))) is GatedConv2d
        with pytest.raises(TypeError):
            gated(nn.Linear(3, 4))

    def test_training_form_gives_gradients_to_the_weights_and_the_gate(self):
        conv = gated(nn.Conv2d(16, 8, 3, padding=1), alpha=-1.0).train()
        conv(features()).square().mean().backward()
        assert conv.weight.grad.abs().sum() > 0 and conv.gate.alpha.grad is not None


class TestGatedModel:
    def test_registered_under_its_own_name(self):
        from codec.registry import MODELS

        assert MODELS["metalic-vr-ecg"] is GatedVariableRateHyperprior

    def test_dense_weights_load_and_at_the_start_decode_as_the_dense_model(self):
        dense = small_net(seed=1).eval()
        net = GatedVariableRateHyperprior(**SMALL)
        net.load_state_dict(dense.state_dict())
        net.eval()
        assert len(net.gates()) == 13 and all(g.alpha.item() == ALPHA_START for g in net.gates().values())
        y_hat = torch.randn(1, SMALL["M"], 4, 4) * 4
        lam = torch.tensor([0.01])
        with torch.no_grad():
            assert torch.equal(net.synthesize(y_hat, lam), dense.synthesize(y_hat, lam))

    def test_gating_counts_fewer_flops_in_every_transform(self):
        torch.manual_seed(0)
        net = GatedVariableRateHyperprior(**SMALL).eval()
        x, lam = torch.rand(1, 3, 128, 128), torch.tensor([0.01])
        start = transform_flops(net, x, lam)
        set_alpha(net, 0.0)
        sparse = transform_flops(net, x, lam)
        dense = transform_flops(VariableRateHyperprior(**SMALL).eval(), x, lam)
        # at the start the gates skip only all-zero channels (ẑ has some) and add their own
        # arithmetic, a 5-tap convolution over the channels
        assert all(start[t] < 1.001 * dense[t] for t in dense) and start["g_s"] >= dense["g_s"]
        assert all(sparse[t] < dense[t] for t in dense)

    def test_the_sparsity_term_is_zero_at_the_target(self):
        net = GatedVariableRateHyperprior(**SMALL)
        assert net.sparsity_loss(ALPHA_START).item() == 0
        assert net.sparsity_loss(ALPHA_START + 1).item() == pytest.approx(13.0)


@pytest.fixture(scope="module")
def gated_weights(tmp_path_factory):
    """A small gated model whose gates are shut halfway (α = 0), as a weights file."""
    torch.manual_seed(0)
    net = GatedVariableRateHyperprior(**SMALL)
    net.load_state_dict(small_net(seed=2).state_dict())
    set_alpha(net, 0.0)
    with torch.no_grad():
        for g in net.gates().values():
            g.kernel.copy_(torch.tensor([0.05, -0.1, 0.2, -0.1, 0.05]))
    net.update(force=True)
    path = tmp_path_factory.mktemp("ecg") / "ecg.pt"
    torch.save({"model": net.state_dict(), "config": dict(SMALL)}, path)
    return path


class TestGatedStreams:
    def test_a_stream_names_its_model_and_decodes_to_what_the_encoder_measured(self, gated_weights):
        enc = Encoder(model="metalic-vr-ecg", device="cpu", weights=str(gated_weights))
        res = enc.encode(png_bytes(make_image(160, 96)), {"model": "metalic-vr-ecg", "lmbda": 0.01, "preset": "fast"})
        assert bitstream.unpack(res.bitstream).model_id == "metalic-vr-ecg"
        out = decode(res.bitstream, weights=str(gated_weights))
        assert np.array_equal(out.rgb, res.reconstruction)
        # the gates did gate in the synthesis: fewer FLOPs than the same network dense
        net = enc.backend.net
        x = torch.rand(1, 3, 128, 192)
        assert transform_flops(net, x, torch.tensor([0.01]))["g_s"] < transform_flops(
            VariableRateHyperprior(**SMALL).eval(), x, torch.tensor([0.01]))["g_s"]

    def test_refined_encode_decodes_exactly_in_a_fresh_process(self, gated_weights, tmp_path):
        enc = Encoder(model="metalic-vr-ecg", device="cpu", weights=str(gated_weights))
        res = enc.encode(png_bytes(make_image(128, 128, seed=3)),
                         {"model": "metalic-vr-ecg", "lmbda": 0.02, "preset": "fast", "refine": True, "refine_steps": 3})
        (tmp_path / "a.mlic").write_bytes(res.bitstream)
        script = ("import sys, numpy as np\nfrom codec.pipeline import decode\n"
                  "np.save(sys.argv[2], decode(open(sys.argv[1], 'rb').read(), weights=sys.argv[3]).rgb)\n")
        subprocess.run([sys.executable, "-c", script, str(tmp_path / "a.mlic"), str(tmp_path / "rgb.npy"),
                        str(gated_weights)], check=True, cwd=ROOT, timeout=300)
        assert np.array_equal(np.load(tmp_path / "rgb.npy"), res.reconstruction)

    def test_the_shipped_name_loads_the_default_weights_with_its_gates_at_the_start(self):
        from codec.weights import load_model

        dense, gated_model = load_model("metalic-vr"), load_model("metalic-vr-ecg")
        assert type(gated_model.backend.net) is GatedVariableRateHyperprior
        assert gated_model.weights_hash == dense.weights_hash and gated_model.trained
