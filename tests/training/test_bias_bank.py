"""The bias-bank pipeline (training/bias_bank.py) and the bank's decoding contract, on tiny models."""

import json

import numpy as np
import pytest
import torch

from codec import bitstream
from codec.constants import NUM_BIAS_CLUSTERS
from codec.models.variable_rate import VariableRateHyperprior
from training.bias_bank import (BiasBankConfig, bank_gain, build_bank, cluster_deltas, overfit_biases,
                                   write_bank)

from tests.support.images import make_image


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A seeded N=16, M=24 weights file, a folder of images >= 256 px, and a built bank."""
    root = tmp_path_factory.mktemp("bank")
    torch.manual_seed(0)
    net = VariableRateHyperprior(16, 24)
    torch.save({"model": net.state_dict(), "config": net.config(), "step": 7, "wall": 1.5}, root / "tiny.pt")
    (root / "log.csv").write_text("step,kind,loss\n7,train,1.0\n")  # the source run's training log
    (root / "imgs").mkdir()
    for i in range(2):
        make_image(300, 272, seed=i).save(root / "imgs" / f"{i}.png")
    summary = build_bank(config(root, root / "bank"), device="cpu", quiet=True)
    return root, summary


def config(root, out, **kw) -> BiasBankConfig:
    base = dict(weights=str(root / "tiny.pt"), data=[str(root / "imgs")], out=str(out), patches=6, steps=3,
                lr=1e-2, batch_size=4, clusters=4, amp="off", threads=1, save_every=1,
                eval_patches=2)
    return BiasBankConfig(**(base | kw))


def banks(state: dict) -> list[torch.Tensor]:
    return [state["model"][f"bias_bank.bank{i}"] for i in range(4)]


def loaded(path):
    from codec.weights import load_model

    return load_model("metalic-vr", "cpu", str(path)).backend


class TestBuildBank:
    def test_bank_has_zero_row_and_the_clusters(self, tiny):
        root, summary = tiny
        state = torch.load(root / "bank" / "weights.pt", weights_only=True)
        deltas = torch.load(root / "bank" / "deltas.pt", weights_only=True)["deltas"]
        k = summary["clusters"]
        assert 1 <= k <= 4 and summary["patches"] == 6 and deltas.shape == (6, 16 * 3 + 3)
        centroids, sizes = cluster_deltas(deltas.numpy(), 4, seed=2, iters=30)
        rows = torch.cat(banks(state), 1)
        assert rows.shape == (NUM_BIAS_CLUSTERS, 16 * 3 + 3)
        assert rows[0].abs().max() == 0 and rows[1 + k:].abs().max() == 0
        assert torch.allclose(rows[1:1 + k], torch.from_numpy(centroids))
        assert sizes.sum() == 6 and list(sizes) == sorted(sizes, reverse=True)
        assert summary["held_out_patches"] == 2 and summary["held_out_mean_gain_db"] >= 0

    def test_overfitting_never_makes_a_patch_worse(self):
        torch.manual_seed(0)
        net = VariableRateHyperprior(16, 24).eval()
        x = torch.from_numpy(np.array(make_image(128, 128, seed=5))).permute(2, 0, 1)[None].float() / 255
        r = overfit_biases(net, x.repeat(2, 1, 1, 1), torch.tensor([1e-3, 1e-1]), steps=5, lr=1e-2)
        assert (r["mse_after"] <= r["mse_before"]).all()
        assert all(not p.requires_grad or p.grad is None for p in net.parameters())
        assert all(p.requires_grad for p in net.parameters())  # restored

    def test_search_finds_the_patch_own_offset(self):
        torch.manual_seed(0)
        net = VariableRateHyperprior(16, 24).eval()
        x = torch.from_numpy(np.array(make_image(128, 128, seed=6))).permute(2, 0, 1)[None].float() / 255
        lam = torch.tensor([1e-2])
        r = overfit_biases(net, x, lam, steps=5, lr=1e-2)
        assert r["mse_after"][0] < r["mse_before"][0]
        noise = np.random.default_rng(0).normal(0, 1e-2, (20, r["delta"].shape[1])).astype(np.float32)
        centroids = np.concatenate([noise[:7], r["delta"].numpy(), noise[7:]])
        g = bank_gain(net, x, lam, centroids, batch=6)
        assert g["index"] == 8 and g["mse_best"] == pytest.approx(r["mse_after"][0].item(), rel=1e-5)
        assert g["mse0"] == pytest.approx(r["mse_before"][0].item(), rel=1e-5)

    def test_resume_gives_the_same_offsets(self, tiny, tmp_path):
        root, _ = tiny
        build_bank(config(root, tmp_path / "r", patches=3, batch_size=2), device="cpu", quiet=True)
        build_bank(config(root, tmp_path / "r", patches=6, batch_size=2), device="cpu", quiet=True)
        a = torch.load(root / "bank" / "deltas.pt", weights_only=True)["deltas"]
        b = torch.load(tmp_path / "r" / "deltas.pt", weights_only=True)["deltas"]
        # same patches whatever the batch size and the resume point
        assert torch.allclose(a, b, atol=1e-6)
        log = (tmp_path / "r" / "log.csv").read_text().splitlines()
        assert [int(line.split(",")[0]) for line in log[1:]] == [2, 3, 5, 6]

    def test_resume_with_other_settings_is_refused(self, tiny, tmp_path):
        root, _ = tiny
        build_bank(config(root, tmp_path / "r", patches=2), device="cpu", quiet=True)
        with pytest.raises(ValueError, match="other weights or settings"):
            build_bank(config(root, tmp_path / "r", patches=4, lr=1e-3), device="cpu", quiet=True)

    def test_export_records_bank_and_hash(self, tiny, tmp_path):
        from training.export import export
        from codec.weights import sha256_file

        root, summary = tiny
        entry = export(root / "bank" / "weights.pt", "metalic-vr", tmp_path)
        assert entry["sha256"] == sha256_file(tmp_path / "metalic-vr.pt")
        assert entry["bias_bank"]["clusters"] == summary["clusters"] == entry["bias_bank_clusters"]
        assert json.loads((tmp_path / "manifest.json").read_text())["default"] == "metalic-vr"
        # the weights' own history comes along: steps and the source run's log, the bank's log beside it
        assert entry["steps"] == 7 and entry["wall_seconds"] == 1.5
        assert (tmp_path / entry["log"]).read_text().startswith("step,kind,loss")
        assert (tmp_path / entry["bias-bank_log"]).read_text().startswith("patches,")


class TestClustering:
    def test_fewer_patches_than_clusters_makes_one_cluster_each(self):
        d = np.random.default_rng(0).normal(size=(5, 51)).astype(np.float32)
        centroids, sizes = cluster_deltas(d, NUM_BIAS_CLUSTERS - 1)
        assert np.array_equal(centroids, d) and list(sizes) == [1] * 5
        net = VariableRateHyperprior(16, 24)
        write_bank(net, centroids)
        rows = torch.cat([net.bias_bank.bank(i) for i in range(4)], 1)
        assert torch.equal(rows[1:6], torch.from_numpy(d)) and rows[0].abs().max() == 0 and rows[6:].abs().max() == 0

    def test_many_patches_give_255_clusters_largest_first(self):
        rng = np.random.default_rng(0)
        d = rng.normal(size=(1200, 8))
        centroids, sizes = cluster_deltas(d, NUM_BIAS_CLUSTERS - 1, seed=0, iters=5)
        assert 200 < len(centroids) <= 255 and sizes.sum() == 1200
        assert (sizes > 0).all() and list(sizes) == sorted(sizes, reverse=True)

    def test_too_many_centroids_are_refused(self):
        with pytest.raises(ValueError, match="do not fit"):
            write_bank(VariableRateHyperprior(16, 24), np.zeros((NUM_BIAS_CLUSTERS, 51), np.float32))


class TestBankDecoding:
    """The bank built by the pipeline, through the loaded backend (as the decoder uses it)."""

    def test_index_zero_decodes_identically_to_no_bank(self, tiny):
        root, _ = tiny
        b = loaded(root / "bank" / "weights.pt")
        assert not b.net.bias_bank.is_empty()
        y = torch.randn(1, 24, 16, 32)  # a 256x512 image: 1x2 patches
        idx = torch.zeros(1, 2, dtype=torch.long)
        assert torch.equal(b.synthesize(y, 20000, None, idx), b.synthesize(y, 20000))

    def test_known_offset_changes_exactly_its_patch(self, tiny):
        root, _ = tiny
        b = loaded(root / "bank" / "weights.pt")
        bank = b.net.bias_bank
        saved = [bank.bank(i)[5].clone() for i in range(4)]
        c = torch.tensor([0.125, -0.25, 0.0625])
        try:
            for i in range(3):
                bank.bank(i)[5] = 0
            bank.bank3[5] = c  # last conv: stride 1, output RGB, before clamping
            y = torch.randn(1, 24, 16, 32)
            idx = torch.tensor([[0, 5]])
            d = b.synthesize(y, 20000, None, idx) - b.synthesize(y, 20000)
            assert torch.allclose(d[0, :, :, 256:], c[:, None, None].expand(3, 256, 256), atol=1e-6)
            assert d[0, :, :, :256].abs().max() == 0
        finally:
            for i in range(4):
                bank.bank(i)[5] = saved[i]

    def test_indices_survive_the_container_round_trip(self, tiny):
        from codec.bitstream import ImageMode
        from codec.image import pad, to_tensor
        from codec.layers import BiasBank
        from codec.pipeline import Encoder

        root, summary = tiny
        enc = Encoder("metalic-vr", device="cpu", weights=str(root / "bank" / "weights.pt"))
        rgb = np.asarray(make_image(520, 300, seed=7))  # 2 x 3 patches, edge patches partial
        grid = BiasBank.grid_shape(300, 520)
        bias = (np.arange(grid[0] * grid[1]) % (summary["clusters"] + 1)).reshape(grid).astype(np.uint8)
        cand = enc.code(pad(to_tensor(rgb)), rgb, ImageMode.RGB, 20000, bias=bias)
        p = bitstream.unpack(cand.data)
        got = np.frombuffer(p.bias_indices, dtype=np.uint8).reshape(grid)
        assert np.array_equal(got, bias)
        # the unpacked indices decode to exactly what the encoder measured
        b = enc.backend
        x_hat = b.decompress([[s] for s in p.strings], p.latent_shape, p.rate_index, None,
                             torch.from_numpy(got.astype(np.int64)))
        from codec.image import tensor_to_rgb

        assert np.array_equal(tensor_to_rgb(x_hat[..., :300, :520]), cand.rgb)
