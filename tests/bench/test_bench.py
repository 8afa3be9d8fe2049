"""Tests of bench/ (and codec/metrics.py), BD metrics, Pillow anchors, the RD runner and its CLI.

Every image is synthetic and tiny (made here, never read from ../shared), so
the whole file runs in seconds on a busy 2-core machine.
"""

from __future__ import annotations

import argparse
import io
import json
import math

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from bench import anchors
from codec import metrics
from bench.bdrate import bd_psnr, bd_rate
from bench.rd import AnchorCache, RDConfig, add_bench_subparsers, load_images, main_rd, run_rd
from bench.runners import MetalicRunner

AVAILABLE = anchors.available_codecs()


def synthetic_image(width: int = 96, height: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth colour gradient with an edge and mild noise: codecs behave as on photos."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.stack(
        [
            255 * xx / width,
            128 + 100 * np.sin(yy / 7.0 + seed),
            np.where(xx + yy > (width + height) / 2, 200.0, 40.0),
        ],
        axis=-1,
    )
    img += rng.normal(0, 6, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def strict_json(text: str):
    """json.loads that rejects NaN/Infinity, which strict JSON readers refuse."""

    def reject(name: str):
        raise ValueError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=reject)


class FakeMetalic:
    """A stand-in MetalicRunner: JPEG at a quality that grows with log λ."""

    def encode(self, img: np.ndarray, lmbda: float) -> bytes:
        quality = int(np.clip(round(20 + 10 * math.log2(lmbda / 1e-3)), 1, 95))
        return anchors.encode("jpeg", img, quality)

    def decode(self, data: bytes) -> np.ndarray:
        return anchors.decode(data)


FAKE_LAMBDAS = (0.001, 0.004, 0.016, 0.064)  # JPEG quality 20, 40, 60, 80


class TestMetrics:
    def test_psnr_of_unit_error_is_20_log10_255(self):
        a = np.zeros((8, 8, 3), np.uint8)
        assert metrics.psnr(a, a + 1) == pytest.approx(20 * math.log10(255), abs=1e-12)

    def test_psnr_of_constant_error(self):
        a = np.full((4, 6, 3), 100, np.uint8)
        assert metrics.psnr(a, a + 5) == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-12)

    def test_psnr_of_identical_images_is_capped(self):
        a = synthetic_image()
        assert metrics.psnr(a, a.copy()) == metrics.PSNR_CAP_DB

    def test_psnr_rounds_and_clips_float_input(self):
        a = np.zeros((4, 4, 3), np.uint8)
        # 0.4 rounds to 0 and -3 clips to 0: both are identical to `a` in 8 bits.
        assert metrics.psnr(a, np.full(a.shape, 0.4)) == metrics.PSNR_CAP_DB
        assert metrics.psnr(a, np.full(a.shape, -3.0)) == metrics.PSNR_CAP_DB
        assert metrics.psnr(a, np.full(a.shape, 300.0)) == pytest.approx(10 * math.log10(255**2 / 255**2))

    def test_psnr_rejects_mismatched_shapes(self):
        with pytest.raises(ValueError, match="shape"):
            metrics.psnr(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))
        with pytest.raises(ValueError, match="RGB"):
            metrics.psnr(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8))

    def test_ms_ssim_is_one_for_identical_and_lower_for_degraded(self):
        a = synthetic_image(176, 168)
        assert metrics.ms_ssim(a, a) == pytest.approx(1.0, abs=1e-6)
        _, a_hat = anchors.encode_at("jpeg", a, 10)
        assert 0.0 < metrics.ms_ssim(a, a_hat) < 0.999

    def test_ms_ssim_is_nan_below_minimum_size(self):
        a = synthetic_image(200, metrics.MS_SSIM_MIN_SIDE - 1)
        assert math.isnan(metrics.ms_ssim(a, a))

    def test_bpp_counts_every_byte(self):
        assert metrics.bpp(100, 10, 20) == 4.0
        with pytest.raises(ValueError):
            metrics.bpp(100, 0, 20)


class TestBdRate:
    rate = [0.1, 0.25, 0.5, 1.0, 2.0]
    psnr = [27.0, 30.0, 33.0, 36.5, 40.0]

    def test_ten_percent_fewer_bits_is_minus_ten(self):
        assert bd_rate(self.rate, self.psnr, [0.9 * r for r in self.rate], self.psnr) == pytest.approx(-10.0, abs=1e-9)

    def test_identical_curves_give_zero(self):
        assert bd_rate(self.rate, self.psnr, self.rate, self.psnr) == pytest.approx(0.0, abs=1e-12)
        assert bd_psnr(self.rate, self.psnr, self.rate, self.psnr) == pytest.approx(0.0, abs=1e-12)

    def test_more_bits_is_positive(self):
        assert bd_rate(self.rate, self.psnr, [1.25 * r for r in self.rate], self.psnr) == pytest.approx(25.0)

    def test_input_order_does_not_matter(self):
        order = [3, 0, 4, 1, 2]
        shuffled_r = [0.9 * self.rate[i] for i in order]
        shuffled_q = [self.psnr[i] for i in order]
        assert bd_rate(self.rate, self.psnr, shuffled_r, shuffled_q) == pytest.approx(-10.0)

    def test_shifted_linear_curve_over_partial_overlap(self):
        # PSNR = 30 + 10 log10(R): one dB more at every rate is a rate factor
        # of 10**(-0.1) wherever the curves overlap; pchip is exact on lines.
        rates = np.geomspace(0.1, 2.0, 6)
        psnr_a = 30 + 10 * np.log10(rates)
        rates_t = rates * 1.3  # a shifted sampling: the PSNR ranges only partly overlap
        psnr_t = 31 + 10 * np.log10(rates_t)
        assert bd_rate(rates, psnr_a, rates_t, psnr_t) == pytest.approx((10**-0.1 - 1) * 100, abs=1e-9)
        assert bd_psnr(rates, psnr_a, rates_t, psnr_t) == pytest.approx(1.0, abs=1e-9)

    def test_bd_psnr_of_constant_shift(self):
        assert bd_psnr(self.rate, self.psnr, self.rate, [q + 0.5 for q in self.psnr]) == pytest.approx(0.5)

    @pytest.mark.parametrize(
        ("rate_t", "psnr_t", "message"),
        [
            ([0.5], [33.0], "at least 2"),
            ([0.5, 1.0], [33.0], "rates but"),
            ([0.5, 1.0], [50.0, 55.0], "do not overlap"),
            ([0.5, 1.0], [33.0, 33.0], "same PSNR"),
            ([0.0, 1.0], [30.0, 33.0], "positive"),
            ([0.5, float("nan")], [30.0, 33.0], "finite"),
        ],
    )
    def test_bad_curves_raise_value_error(self, rate_t, psnr_t, message):
        with pytest.raises(ValueError, match=message):
            bd_rate(self.rate, self.psnr, rate_t, psnr_t)

    def test_bd_psnr_needs_overlapping_rates(self):
        with pytest.raises(ValueError, match="rate ranges"):
            bd_psnr(self.rate, self.psnr, [5.0, 6.0], [41.0, 42.0])


# A low and a high setting per anchor; the JPEG 2000 parameter is a ratio (low = big file).
LOW_HIGH = {"jpeg": (10, 90), "webp": (10, 90), "jpeg2000": (100.0, 6.0), "avif": (10, 90)}


class TestAnchors:
    def test_available_and_unavailable_partition_the_registry(self):
        missing = anchors.unavailable_codecs()
        assert sorted(AVAILABLE + list(missing)) == sorted(anchors.ANCHORS)
        assert all(isinstance(reason, str) and reason for reason in missing.values())

    @pytest.mark.parametrize("name", AVAILABLE)
    def test_round_trip_improves_with_quality(self, name):
        img = synthetic_image()
        low, high = LOW_HIGH[name]
        data_lo, img_lo = anchors.encode_at(name, img, low)
        data_hi, img_hi = anchors.encode_at(name, img, high)
        for data, out in ((data_lo, img_lo), (data_hi, img_hi)):
            assert type(data) is bytes and len(data) > 0
            assert out.shape == img.shape and out.dtype == np.uint8
        assert len(data_hi) > len(data_lo)
        assert metrics.psnr(img, img_hi) > metrics.psnr(img, img_lo)

    @pytest.mark.parametrize("name", AVAILABLE)
    def test_search_lands_on_the_closest_parameter(self, name):
        img = synthetic_image()
        h, w = img.shape[:2]
        target = 2.0
        param, data = anchors.search_param(name, img, target)
        got = metrics.bpp(len(data), w, h)
        spec = anchors.ANCHORS[name]
        if spec.integer_param:
            for neighbour in (param - 1, param + 1):
                if spec.param_min <= neighbour <= spec.param_max:
                    other = metrics.bpp(len(anchors.encode(name, img, neighbour)), w, h)
                    assert abs(got - target) <= abs(other - target)
        else:
            assert got == pytest.approx(target, rel=0.05)
        data2, decoded = anchors.encode_at_bpp(name, img, target)
        assert data2 == data and decoded.shape == img.shape

    def test_search_clamps_an_unreachable_target(self):
        param, _ = anchors.search_param("jpeg", synthetic_image(), 1e-4)
        assert param == anchors.ANCHORS["jpeg"].param_min

    def test_jpeg_defaults_to_420_subsampling(self):
        data = anchors.encode("jpeg", synthetic_image(), 75)
        with Image.open(io.BytesIO(data)) as im:
            assert JpegImagePlugin.get_sampling(im) == 2  # 2 = 4:2:0 in Pillow's numbering
        data444 = anchors.encode("jpeg", synthetic_image(), 75, {"subsampling": "4:4:4"})
        with Image.open(io.BytesIO(data444)) as im:
            assert JpegImagePlugin.get_sampling(im) == 0

    @pytest.mark.skipif("jpeg2000" not in AVAILABLE, reason="Pillow built without OpenJPEG")
    def test_jpeg2000_writes_a_raw_codestream(self):
        assert anchors.encode("jpeg2000", synthetic_image(), 24.0)[:4] == b"\xff\x4f\xff\x51"

    def test_bad_names_and_parameters_raise(self):
        img = synthetic_image()
        with pytest.raises(ValueError, match="unknown anchor"):
            anchors.encode("bpg", img, 30)
        with pytest.raises(ValueError, match="quality"):
            anchors.encode("jpeg", img, 0)
        with pytest.raises(ValueError, match="integer"):
            anchors.encode("jpeg", img, 50.5)
        with pytest.raises(ValueError, match="uint8"):
            anchors.encode("jpeg", img.astype(np.float32), 50)


class TestRunRd:
    def test_fake_runner_satisfies_the_protocol(self):
        assert isinstance(FakeMetalic(), MetalicRunner)

    def test_end_to_end_writes_every_output(self, tmp_path):
        images = [("a", synthetic_image(96, 64, seed=1)), ("b", synthetic_image(80, 48, seed=2))]
        config = RDConfig(lambdas=FAKE_LAMBDAS, timing_runs=1, timing_codecs=("jpeg",))
        summary = run_rd(images, tmp_path, metalic=FakeMetalic(), config=config)

        for name, img in images:
            record = strict_json((tmp_path / "per_image" / f"{name}.json").read_text())
            assert record["width"] == img.shape[1] and record["height"] == img.shape[0]
            assert set(record["points"]) == {"metalic", *AVAILABLE}
            point = record["points"]["metalic"][0]
            assert point["bpp"] == pytest.approx(point["bytes"] * 8 / img.shape[0] / img.shape[1])
            assert point["ms_ssim"] is None  # undefined on images this small
            assert set(record["timing"]) == {"metalic", "jpeg"}

        on_disk = strict_json((tmp_path / "summary.json").read_text())
        assert on_disk["num_images"] == 2 == summary["num_images"]
        assert len(on_disk["curves"]["metalic"]) == len(FAKE_LAMBDAS)
        for name in AVAILABLE:
            assert len(on_disk["curves"][name]) == len(anchors.ANCHORS[name].sweep)
        # The stand-in *is* JPEG, so against JPEG its BD-rate is about zero.
        assert on_disk["bd"]["jpeg"]["error"] is None
        assert abs(on_disk["bd"]["jpeg"]["bd_rate"]) < 5.0
        assert on_disk["timing"]["median"]["jpeg"]["encode_ratio"] > 0

        table = (tmp_path / "table.md").read_text()
        assert "BD-rate" in table and "### metalic" in table and "Timing" in table
        with Image.open(tmp_path / "rd.png") as im:
            assert im.format == "PNG" and im.width > 100

    def test_anchors_only_at_target_bpps(self, tmp_path):
        targets = (0.5, 1.0, 2.0)
        config = RDConfig(codecs=("jpeg", "webp"), targets=targets)
        summary = run_rd([("a", synthetic_image())], tmp_path, metalic=None, config=config)
        assert summary["bd"] == {} and set(summary["curves"]) == {"jpeg", "webp"}
        assert [p["label"] for p in summary["curves"]["webp"]] == list(targets)
        assert (tmp_path / "rd.png").exists() and (tmp_path / "table.md").exists()

    def test_anchor_cache_reuses_points_of_the_same_image_only(self, tmp_path, monkeypatch):
        config = RDConfig(lambdas=FAKE_LAMBDAS, codecs=("jpeg",))
        a, b = synthetic_image(64, 48, seed=1), synthetic_image(64, 48, seed=2)
        cache = AnchorCache(tmp_path / "anchors.json")
        first = run_rd([("a", a)], tmp_path / "1", metalic=FakeMetalic(), config=config, anchor_cache=cache)

        encodes = []
        real_encode = anchors.encode
        monkeypatch.setattr(anchors, "encode", lambda *args, **kw: encodes.append(args[0]) or real_encode(*args, **kw))
        again = run_rd([("a", a)], tmp_path / "2", metalic=FakeMetalic(),
                       config=config, anchor_cache=AnchorCache(tmp_path / "anchors.json"))
        assert len(encodes) == len(FAKE_LAMBDAS)  # the stand-in's own JPEG files; no anchor point
        assert again["curves"]["jpeg"] == first["curves"]["jpeg"]
        record = json.loads((tmp_path / "2" / "per_image" / "a.json").read_text())
        assert all(p["cached"] for p in record["points"]["jpeg"])
        assert again["bd"]["jpeg"]["bd_rate"] == pytest.approx(first["bd"]["jpeg"]["bd_rate"])

        encodes.clear()
        run_rd([("a", b)], tmp_path / "3", metalic=FakeMetalic(), config=config, anchor_cache=cache)
        assert len(encodes) == len(FAKE_LAMBDAS) + len(anchors.ANCHORS["jpeg"].sweep)  # other pixels: measured

    def test_config_rejects_unknown_codecs(self, tmp_path):
        with pytest.raises(ValueError, match="unknown anchor"):
            run_rd([("a", synthetic_image())], tmp_path, config=RDConfig(codecs=("bpg",)))


class TestCli:
    def _folder(self, tmp_path):
        data = tmp_path / "data"
        data.mkdir()
        Image.fromarray(synthetic_image(seed=3)).save(data / "one.png")
        Image.fromarray(synthetic_image(seed=4)).convert("RGBA").save(data / "two.png")
        return data

    def test_load_images_converts_to_rgb_and_sorts(self, tmp_path):
        images = load_images(self._folder(tmp_path))
        assert [name for name, _ in images] == ["one", "two"]
        assert all(img.shape == (64, 96, 3) and img.dtype == np.uint8 for _, img in images)
        assert [name for name, _ in load_images(tmp_path / "data", limit=1)] == ["one"]

    def test_load_images_rejects_duplicate_stems(self, tmp_path):
        data = self._folder(tmp_path)
        Image.fromarray(synthetic_image()).save(data / "one.jpg")
        with pytest.raises(ValueError, match="two images named"):
            load_images(data)

    def test_main_rd_anchors_only(self, tmp_path, capsys):
        data = self._folder(tmp_path)
        out = tmp_path / "out"
        argv = ["--data", str(data), "--out", str(out), "--no-metalic", "--codecs", "jpeg", "--timing-runs", "0"]
        assert main_rd(argv) == 0
        assert sorted(p.name for p in (out / "per_image").iterdir()) == ["one.json", "two.json"]
        assert strict_json((out / "summary.json").read_text())["images"] == ["one", "two"]

    def test_main_rd_anchor_cache_file(self, tmp_path):
        data = self._folder(tmp_path)
        cache = tmp_path / "anchors.json"
        argv = ["--data", str(data), "--no-metalic", "--codecs", "jpeg", "--timing-runs", "0", "--anchor-cache", str(cache)]
        assert main_rd([*argv, "--out", str(tmp_path / "a")]) == 0
        assert len(json.loads(cache.read_text())) == 2  # one entry per image and codec
        assert main_rd([*argv, "--out", str(tmp_path / "b")]) == 0
        record = strict_json((tmp_path / "b" / "per_image" / "two.json").read_text())
        assert all(p["cached"] for p in record["points"]["jpeg"])

    def test_bench_subparsers_plug_into_a_parent_cli(self, tmp_path):
        parser = argparse.ArgumentParser(prog="metalic")
        bench = parser.add_subparsers(dest="command").add_parser("bench").add_subparsers(dest="bench_command")
        add_bench_subparsers(bench)
        argv = ["bench", "rd", "--data", "d", "--out", "o", "--lambdas", "0.01,0.1", "--targets", "0.5"]
        args = parser.parse_args(argv)
        assert args.lambdas == (0.01, 0.1) and args.targets == (0.5,) and callable(args.func)
        args = parser.parse_args(["bench", "speed", "--data", "d", "--out", "o", "--timing-runs", "3"])
        assert args.timing_runs == 3 and callable(args.func)


def test_the_default_rate_points_span_the_shipped_models_rate_index_unclamped():
    from bench.rd import DEFAULT_LAMBDAS
    from codec.rate import lambda_to_index
    from codec.weights import read_manifest

    manifest = read_manifest()
    lo, hi = manifest["models"][manifest["default"]]["lmbda_range"]
    indices = [lambda_to_index(lm) for lm in DEFAULT_LAMBDAS]
    assert lambda_to_index(lo / 2) <= min(indices) and max(indices) <= lambda_to_index(min(1.0, hi * 2))
    assert len(set(indices)) == len(DEFAULT_LAMBDAS)
