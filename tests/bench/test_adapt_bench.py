"""The adaptation benchmark (bench/adapt_bench.py) on a small seeded model."""

import json
import warnings

import pytest

from codec.pipeline import Encoder
from tests.support.models import save_weights, small_net, synthetic_image


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Encoder:
    weights = save_weights(small_net(), tmp_path_factory.mktemp("w") / "small.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Encoder(weights=str(weights), device="cpu")


class TestAdaptBench:
    def test_writes_json_markdown_plot_and_rate_control_table(self, encoder, tmp_path):
        from bench.adapt_bench import run_adapt

        images = [("a", synthetic_image(64, 64)), ("b", synthetic_image(64, 64, seed=2))]
        summary = run_adapt(images, tmp_path, encoder=encoder, configs=("forward", "lambda"), lambdas=(0.1, 0.3),
                            targets=(0.3,), rc_preset="fast", overrides={"lambda_steps": 2}, reference=encoder)
        for name in ("adapt.json", "adapt.md", "adapt_rd.png", "per_image/a.json"):
            assert (tmp_path / name).is_file()
        assert set(summary["stages"]) == {"forward", "lambda", "reference forward"}
        # the reference here is the same model: its forward pass is the same files
        assert summary["stages"]["forward"]["bd_rate_vs_reference"] == pytest.approx(0.0, abs=1e-6)
        assert "reference model" in (tmp_path / "adapt.md").read_text()
        assert summary["stages"]["forward"]["time_ratio_vs_forward"] == pytest.approx(1.0)
        rc = summary["rate_control"]
        assert 0.0 <= rc["within"] <= 1.0 and len(rc["per_target"]) == 1
        assert json.loads((tmp_path / "adapt.json").read_text())["summary"]["num_images"] == 2

    def test_resume_reuses_only_per_image_results_made_with_the_same_settings(self, encoder, tmp_path):
        from bench.adapt_bench import run_adapt

        images = [("a", synthetic_image(64, 64))]
        kwargs = dict(encoder=encoder, configs=("forward",), lambdas=(0.1, 0.3), targets=None)
        run_adapt(images, tmp_path, **kwargs)
        path = tmp_path / "per_image" / "a.json"
        record = json.loads(path.read_text())
        record["points"]["forward"][0]["psnr"] = 99.0  # a marker only a reused record carries
        path.write_text(json.dumps(record))
        reused = run_adapt(images, tmp_path, resume=True, **kwargs)
        assert reused["curves"]["forward"][0]["psnr"] == 99.0
        fresh = run_adapt(images, tmp_path, resume=True, **{**kwargs, "lambdas": (0.1, 0.2)})
        assert fresh["curves"]["forward"][0]["psnr"] != 99.0

    def test_stage_curves_stop_after_each_earlier_stage_with_its_measured_seconds(self):
        from bench.adapt_bench import _stage_curves

        def point(lmbda, bpp):
            return {"label": lmbda, "param_name": "lmbda", "param": lmbda, "bpp": bpp[-1], "psnr": 30.0,
                    "stage_s": {"rate_search": 1.0, "refine": 10.0, "adapt_lambda": 0.5, "bias_search": 2.0,
                                "verify": 0.1},
                    "stages": {"forward": {}, "refine": {"bpp": bpp[0], "psnr": 31.0, "bytes": 10},
                               "adapt_lambda": {"bpp": bpp[1], "psnr": 31.5, "bytes": 11},
                               "bias_search": {"bpp": bpp[2], "psnr": 32.0, "bytes": 12}}}

        curves = _stage_curves({"forward": [{"stages": {"forward": {}}, "stage_s": {}}],
                                "max": [point(0.01, (0.5, 0.51, 0.52)), point(0.02, (0.9, 0.91, 0.92))]})
        assert set(curves) == {"max until refine", "max until adapt_lambda"}
        until_lambda = curves["max until adapt_lambda"]
        assert [p["bpp"] for p in until_lambda] == [0.51, 0.91]
        assert until_lambda[0]["psnr"] == 31.5 and until_lambda[0]["encode_s"] == pytest.approx(11.5)
        assert curves["max until refine"][1]["encode_s"] == pytest.approx(11.0)

    def test_subparser_sets_func(self):
        import argparse

        from bench.adapt_bench import add_adapt_subparser

        parser = argparse.ArgumentParser()
        add_adapt_subparser(parser.add_subparsers(dest="cmd"))
        args = parser.parse_args(["adapt", "--data", "d", "--out", "o", "--limit", "2", "--lambdas", "0.01,0.02"])
        assert callable(args.func) and args.lambdas == (0.01, 0.02) and args.limit == 2
