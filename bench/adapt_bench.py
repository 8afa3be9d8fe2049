"""Benchmark of the encoder's adaptation stages: gains, cost, rate control, memory.

``metalic bench adapt`` measures, on a folder of images:

* per stage configuration (forward pass, +refine, +refine+λ-adapt, the
  balanced and max presets, and λ-adapt alone), the RD curve over a λ list,
  its BD-rate against the plain forward pass (:func:`bench.bdrate.bd_rate`,
  on the average curves and per image) and the seconds per image;
* rate-control accuracy: every image at the 8 JPEG-AI targets with one preset,
  the fraction of files within ±RATE_TOLERANCE and the largest overshoot;
* optionally (``--memory``) the peak resident memory of a ``max`` encode of a
  4-megapixel image, measured in a fresh subprocess with
  ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (tracemalloc misses torch's
  allocations).

Outputs in ``out_dir``::

    adapt.json      every point, per-image BD-rates, the summaries
    adapt.md        the same as Markdown tables
    adapt_rd.png    average PSNR (and MS-SSIM) against bpp per configuration

Typical workflow (``metalic bench adapt``, or the module directly)::

    metalic bench adapt --data ../shared/datasets/kodak --out results/adapt --limit 4
    python -m bench.adapt_bench --data DIR --out OUT --configs forward,refine --no-rate-control
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import report
from .bdrate import bd_rate
from .rd import load_images, parse_floats, run_standalone
from .speed import machine_info

__all__ = ["CONFIGS", "JPEG_AI_TARGETS", "add_adapt_subparser", "main", "measure_peak_memory", "run_adapt"]

JPEG_AI_TARGETS: tuple[float, ...] = (0.06, 0.12, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
"""Bits per pixel. The JPEG-AI challenge's target rates (L²C section III-E)."""

DEFAULT_LAMBDAS: tuple[float, ...] = (0.0009, 0.0025, 0.0067, 0.018, 0.05)
"""Dimensionless. λ points of the stage comparison (fewer than ``bench rd``: each point is a slow encode)."""

FORWARD_BASELINE = "reference forward"
"""Configuration name of the reference model's forward pass (``reference=``)."""

BASELINE = "forward"
"""Configuration every BD-rate is measured against: the plain forward pass."""

CONFIGS: dict[str, dict[str, Any]] = {
    "forward": {"preset": "fast", "rate_control": False},
    "refine": {"preset": "balanced", "adapt_lambda": False, "bias_search": False},
    "refine+lambda": {"preset": "balanced", "adapt_lambda": True, "bias_search": False},
    "balanced": {"preset": "balanced"},
    "max": {"preset": "max"},
    "lambda": {"preset": "fast", "adapt_lambda": True, "lambda_steps": 10},
}
"""Stage configurations: name -> encode options (a λ is added per point).

``refine`` and ``refine+lambda`` pin the stage switches on top of the balanced
step counts, so they stay what their names say if the balanced preset changes."""

MEMORY_SIDE = 2048
"""Pixels. Side of the square test image of the memory measure (4 megapixels)."""


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def _bd(base: Sequence[dict], test: Sequence[dict]) -> float | None:
    """BD-rate (%) of ``test`` against ``base``; None when the curves cannot be compared."""
    def pts(curve):
        out = sorted({(p["bpp"], p["psnr"]) for p in curve if p["bpp"] and p["psnr"] is not None})
        return [r for r, _ in out], [q for _, q in out]

    try:
        return bd_rate(*pts(base), *pts(test))
    except ValueError:
        return None


STAGE_ORDER = ("refine", "adapt_lambda", "bias_search")
"""The stages of one encode, in the order they run."""


def _stage_curves(points: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The curves of a multi-stage configuration stopped after each earlier stage.

    Every stage reports the coded file it ended with (real bytes, the decoder's
    PSNR), so one ``max`` run also gives ``max until refine`` and ``max until
    adapt_lambda``: the gain of each later stage is the difference, measured on
    the same latents. The seconds are the measured ones up to that stage.
    """
    out = {}
    for cfg, curve in points.items():
        ran = [s for s in STAGE_ORDER if all("bpp" in p["stages"].get(s, {}) for p in curve)]
        for stage in ran[:-1]:
            upto = ("rate_search",) + STAGE_ORDER[:STAGE_ORDER.index(stage) + 1]
            out[f"{cfg} until {stage}"] = [
                {"label": p["label"], "param_name": p["param_name"], "param": p["param"],
                 "bytes": p["stages"][stage]["bytes"], "bpp": p["stages"][stage]["bpp"],
                 "psnr": p["stages"][stage]["psnr"], "ms_ssim": None, "decode_s": None,
                 "encode_s": sum(p["stage_s"].get(s, 0.0) for s in upto),
                 "stage_s": {s: p["stage_s"][s] for s in upto if s in p["stage_s"]}}
                for p in curve]
    return out


def _encode_point(encoder, png: bytes, options: dict, decode: Callable) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = encoder.encode(png, options)
    encode_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    decode(res.bitstream)
    decode_s = time.perf_counter() - t1
    m = res.metadata
    return {"bytes": m["bytes"], "bpp": m["bpp"], "psnr": m["psnr"], "ms_ssim": m["ms_ssim"],
            "encode_s": encode_s, "decode_s": decode_s, "stage_s": m["seconds"], "stages": m["stages"],
            "target_reached": m["target_reached"]}


def run_adapt(images: Sequence[tuple[str, np.ndarray]], out_dir: Path | str, *, encoder=None,
              configs: Sequence[str] = tuple(CONFIGS), lambdas: Sequence[float] = DEFAULT_LAMBDAS,
              targets: Sequence[float] | None = JPEG_AI_TARGETS, rc_preset: str = "balanced",
              overrides: dict[str, Any] | None = None, memory: dict | None = None, reference=None,
              resume: bool = False, log: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Runs the stage comparison and the rate-control table, and writes the outputs.

    Args:
        images: sequence of (name, HxWx3 uint8).
        out_dir: path. Created; files in it are overwritten.
        encoder: codec.pipeline.Encoder or None (None loads the default model).
        configs: names from :data:`CONFIGS`; ``forward`` is always run (the baseline).
        lambdas: λ values of the RD curves.
        targets: bpp targets of the rate-control table; None or empty skips it.
        rc_preset: str. Preset of the rate-control runs.
        overrides: dict or None. Options applied to every encode (e.g. step counts).
        memory: dict or None. A :func:`measure_peak_memory` result to include.
        reference: codec.pipeline.Encoder or None. Another model (e.g. the one a
            meta-tuned model started from): its forward pass is coded at the
            same λ values as ``FORWARD_BASELINE`` and every configuration also gets
            its BD-rate against that.
        resume: bool. Reuse ``per_image/<name>.json`` files in ``out_dir`` that
            were made with the same settings (configurations, λ values,
            targets, overrides, weights): an interrupted run continues, and
            runs over disjoint image subsets into one folder can be summarized
            together by a last run over all of them.
        log: callable. Receives one progress line per image and configuration.

    Returns:
        dict. The content of ``adapt.json``.
    """
    from codec.pipeline import Encoder, decode

    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise ValueError(f"unknown configuration(s) {unknown}; known: {', '.join(CONFIGS)}")
    configs = [BASELINE] + [c for c in configs if c != BASELINE]
    if not images:
        raise ValueError("no images to benchmark")
    encoder = encoder or Encoder()
    weights = getattr(encoder, "weights", None)

    def dec(data: bytes):
        return decode(data, weights=weights)

    overrides = dict(overrides or {})
    out_dir = Path(out_dir)
    settings = {"configs": list(configs), "lambdas": [float(v) for v in lambdas],
                "targets": [float(v) for v in targets or ()], "rc_preset": rc_preset, "overrides": overrides,
                "weights": encoder.loaded.weights_hash.hex(),
                "reference": None if reference is None else reference.loaded.weights_hash.hex()}
    records = []
    for name, img in images:
        path = out_dir / "per_image" / f"{name}.json"
        if resume and path.is_file():
            old = json.loads(path.read_text())
            if old.get("settings") == settings:
                records.append(old)
                log(f"{name}: reused {path}")
                continue
        png = _png(img)
        record: dict[str, Any] = {"image": name, "width": int(img.shape[1]), "height": int(img.shape[0]),
                                  "settings": settings, "points": {}, "bd_vs_forward": {}}
        for cfg in configs:
            points = []
            for lmbda in lambdas:
                opts = {**CONFIGS[cfg], **overrides, "lmbda": float(lmbda)}
                point = {"label": lmbda, "param_name": "lmbda", "param": lmbda}
                point.update(_encode_point(encoder, png, opts, dec))
                points.append(point)
            record["points"][cfg] = points
            if cfg != BASELINE:
                record["bd_vs_forward"][cfg] = _bd(record["points"][BASELINE], points)
            log(f"{name}: {cfg} done ({sum(p['encode_s'] for p in points):.1f} s)")
        for cfg, points in _stage_curves(record["points"]).items():
            record["points"][cfg] = points
            record["bd_vs_forward"][cfg] = _bd(record["points"][BASELINE], points)
        if reference is not None:
            ref_dec = lambda data: decode(data, weights=getattr(reference, "weights", None))  # noqa: E731
            record["points"][FORWARD_BASELINE] = [
                {"label": lmbda, "param_name": "lmbda", "param": lmbda,
                 **_encode_point(reference, png, {**CONFIGS[BASELINE], "lmbda": float(lmbda)}, ref_dec)}
                for lmbda in lambdas]
            record["bd_vs_reference"] = {cfg: _bd(record["points"][FORWARD_BASELINE], pts)
                                         for cfg, pts in record["points"].items() if cfg != FORWARD_BASELINE}
        if targets:
            rc = []
            for t in targets:
                p = _encode_point(encoder, png, {"preset": rc_preset, **overrides, "target_bpp": float(t)}, dec)
                p["target_bpp"] = t
                p["error_pct"] = 100 * (p["bpp"] / t - 1)
                rc.append(p)
            record["rate_control"] = rc
            log(f"{name}: rate control done")
        report.write_json(record, path)
        records.append(record)
    configs = configs + [c for c in records[0]["points"] if c not in configs]
    summary = _summarize(records, configs, lambdas, targets, rc_preset, overrides)
    summary["machine"] = machine_info()
    summary["weights"] = {"model": encoder.loaded.name, "trained": encoder.loaded.trained,
                          "hash": encoder.loaded.weights_hash.hex()}
    if memory is not None:
        summary["memory"] = memory
    if reference is not None:
        summary["reference_weights"] = {"model": reference.loaded.name, "hash": settings["reference"]}
    report.write_json({"summary": summary, "records": records}, out_dir / "adapt.json")
    _write_markdown(summary, out_dir / "adapt.md")
    report.plot_rd(summary["curves"], out_dir / "adapt_rd.png",
                   title=f"adaptation stages on {len(records)} images")
    return summary


def _summarize(records, configs, lambdas, targets, rc_preset, overrides) -> dict[str, Any]:
    curves = report.average_curves(records)
    n = len(records)
    table = {}
    for cfg in configs:
        per_image_s = [sum(p["encode_s"] for p in r["points"][cfg]) / len(lambdas) for r in records]
        stage_s: dict[str, float] = {}
        for r in records:
            for p in r["points"][cfg]:
                for k, v in p["stage_s"].items():
                    stage_s[k] = stage_s.get(k, 0.0) + v / (n * len(lambdas))
        bd_img = [r["bd_vs_forward"].get(cfg) for r in records]
        bd_img = [v for v in bd_img if v is not None]
        ref = {}
        if FORWARD_BASELINE in curves and cfg != FORWARD_BASELINE:
            per = [r["bd_vs_reference"].get(cfg) for r in records]
            per = [v for v in per if v is not None]
            ref = {"bd_rate_vs_reference": _bd(curves[FORWARD_BASELINE], curves[cfg]),
                   "bd_rate_vs_reference_per_image_mean": float(np.mean(per)) if per else None}
        table[cfg] = ref | {
            "bd_rate_vs_forward": None if cfg == BASELINE else _bd(curves[BASELINE], curves[cfg]),
            "bd_rate_per_image_mean": float(np.mean(bd_img)) if bd_img else None,
            "seconds_per_encode": float(np.mean(per_image_s)),
            "stage_seconds": {k: round(v, 4) for k, v in stage_s.items()},
        }
    base_s = table[BASELINE]["seconds_per_encode"]
    for row in table.values():
        row["time_ratio_vs_forward"] = row["seconds_per_encode"] / base_s if base_s > 0 else None
    summary: dict[str, Any] = {"num_images": n, "images": [r["image"] for r in records], "lambdas": list(lambdas),
                               "configs": {c: CONFIGS[c] if c in CONFIGS else _derived(c) for c in configs},
                               "overrides": overrides,
                               "curves": curves, "stages": table}
    if targets:
        from codec.options import RATE_TOLERANCE

        rows = []
        for t in targets:
            errs = [p["error_pct"] for r in records for p in r["rate_control"] if p["target_bpp"] == t]
            rows.append({"target_bpp": t, "within": sum(abs(e) <= 100 * RATE_TOLERANCE for e in errs) / len(errs),
                         "max_overshoot_pct": max(max(errs), 0.0), "mean_abs_error_pct": float(np.mean(np.abs(errs))),
                         "reached": sum(bool(p["target_reached"]) for r in records for p in r["rate_control"]
                                        if p["target_bpp"] == t) / len(errs),
                         "seconds_per_encode": float(np.mean([p["encode_s"] for r in records
                                                              for p in r["rate_control"] if p["target_bpp"] == t]))})
        all_errs = [p["error_pct"] for r in records for p in r["rate_control"]]
        summary["rate_control"] = {
            "preset": rc_preset, "tolerance_pct": 100 * RATE_TOLERANCE, "per_target": rows,
            "within": sum(abs(e) <= 100 * RATE_TOLERANCE for e in all_errs) / len(all_errs),
            "max_overshoot_pct": max(max(all_errs), 0.0),
        }
    return summary


def _derived(cfg: str) -> str:
    if cfg == FORWARD_BASELINE:
        return "the reference model's forward pass"
    return "the stages of " + cfg.split(" until ")[0] + " up to " + cfg.split(" until ")[1]


def _f(v, spec=".2f") -> str:
    return "n/a" if v is None else format(v, spec)


def _write_markdown(summary: dict[str, Any], path: Path) -> None:
    lines = [f"# Adaptation stages ({summary['num_images']} images, λ = {summary['lambdas']})", "",
             f"Weights: {summary['weights']['model']} ({'trained' if summary['weights']['trained'] else 'UNTRAINED'},"
             f" {summary['weights']['hash']}). Machine: {summary['machine']['description']}.", "",
             "| configuration | BD-rate vs forward (avg curve) | mean per-image BD-rate | s / encode | × forward |",
             "|---|---|---|---|---|"]
    for cfg, row in summary["stages"].items():
        lines.append(f"| {cfg} | {_f(row['bd_rate_vs_forward'], '+.2f')} % | "
                     f"{_f(row['bd_rate_per_image_mean'], '+.2f')} % | {_f(row['seconds_per_encode'])} | "
                     f"{_f(row['time_ratio_vs_forward'])} |")
    if "reference_weights" in summary:
        ref = summary["reference_weights"]
        lines += ["", f"Against the forward pass of the reference model {ref['model']} ({ref['hash']}):", "",
                  "| configuration | BD-rate vs reference forward (avg curve) | mean per-image |", "|---|---|---|"]
        for cfg, row in summary["stages"].items():
            if "bd_rate_vs_reference" in row:
                lines.append(f"| {cfg} | {_f(row['bd_rate_vs_reference'], '+.2f')} % | "
                             f"{_f(row['bd_rate_vs_reference_per_image_mean'], '+.2f')} % |")
    lines += ["", "Seconds per stage (mean per encode):", "", "| configuration | " + " | ".join(
        ["rate_search", "refine", "adapt_lambda", "bias_search", "verify"]) + " |", "|---|---|---|---|---|---|"]
    for cfg, row in summary["stages"].items():
        s = row["stage_seconds"]
        lines.append(f"| {cfg} | " + " | ".join(_f(s.get(k), ".3f") for k in
                                                 ("rate_search", "refine", "adapt_lambda", "bias_search", "verify")) + " |")
    rc = summary.get("rate_control")
    if rc:
        lines += ["", f"## Rate control (preset {rc['preset']}, tolerance ±{rc['tolerance_pct']:.0f} %)", "",
                  f"Within tolerance: {100 * rc['within']:.1f} % of files; largest overshoot {rc['max_overshoot_pct']:.2f} %.",
                  "", "| target bpp | within ±tol | reported reached | max overshoot % | mean abs error % | s / encode |",
                  "|---|---|---|---|---|---|"]
        for r in rc["per_target"]:
            lines.append(f"| {r['target_bpp']} | {100 * r['within']:.0f} % | {100 * r['reached']:.0f} % | "
                         f"{r['max_overshoot_pct']:.2f} | {r['mean_abs_error_pct']:.2f} | {r['seconds_per_encode']:.2f} |")
    mem = summary.get("memory")
    if mem:
        lines += ["", "## Peak memory", "",
                  f"{mem['preset']} encode of a {mem['width']}x{mem['height']} image: peak RSS "
                  f"{mem['peak_rss_mib']:.0f} MiB (model loaded, before encoding: {mem['baseline_rss_mib']:.0f} MiB), "
                  f"{mem['seconds']:.1f} s."]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- memory

_MEMORY_SCRIPT = r"""
import json, resource, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np
from PIL import Image
import io
from codec.pipeline import Encoder
args = json.loads(sys.argv[1])
enc = Encoder(weights=args["weights"], device="cpu")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
side = args["side"]
yy, xx = np.mgrid[0:side, 0:side]
rng = np.random.default_rng(0)
img = np.stack([xx * 255 / side, 128 + 100 * np.sin(yy / 9), (xx ^ yy) & 255], -1) + rng.normal(0, 8, (side, side, 3))
buf = io.BytesIO(); Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "PNG")
t = time.perf_counter()
res = enc.encode(buf.getvalue(), {"preset": args["preset"], "lmbda": 0.0067, **args["overrides"]})
print(json.dumps({"baseline_kib": base, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "seconds": time.perf_counter() - t, "bpp": res.metadata["bpp"]}))
"""


def measure_peak_memory(preset: str = "max", side: int = MEMORY_SIDE, weights: str | None = None,
                        overrides: dict | None = None, timeout: float = 7200) -> dict[str, Any]:
    """Peak resident memory of one encode of a ``side``x``side`` image, in a fresh process.

    ``ru_maxrss`` of the child is its own high-water mark (KiB on Linux), which
    counts torch's native allocations that ``tracemalloc`` cannot see; a fresh
    process keeps earlier work in the caller from inflating it.

    Returns:
        dict: preset, width, height, peak_rss_mib, baseline_rss_mib (after
        loading the model), seconds, bpp.
    """
    arg = json.dumps({"preset": preset, "side": side, "weights": weights, "overrides": overrides or {}})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                        os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, arg], capture_output=True, text=True,
                         timeout=timeout, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"memory measure failed: {out.stderr.strip().splitlines()[-1:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {"preset": preset, "width": side, "height": side, "peak_rss_mib": r["peak_kib"] / 1024,
            "baseline_rss_mib": r["baseline_kib"] / 1024, "seconds": r["seconds"], "bpp": r["bpp"],
            "overrides": overrides or {}}


# ----------------------------------------------------------------------------- CLI

def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = "Gains, cost and rate-control accuracy of the encoder's adaptation stages."
    parser.add_argument("--data", type=Path, required=True, help="folder of .png/.jpg images")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--limit", type=int, default=None, help="first N images only (sorted by name)")
    parser.add_argument("--skip", type=int, default=0, help="leave out the first N images (before --limit)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse per-image results in --out made with the same settings")
    parser.add_argument("--weights", default=None, help="metalic weights file (default: the shipped model)")
    parser.add_argument("--lambdas", type=parse_floats, default=DEFAULT_LAMBDAS, help="λ values, comma-separated")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"stage configurations, comma-separated (of {', '.join(CONFIGS)})")
    parser.add_argument("--targets", type=parse_floats, default=JPEG_AI_TARGETS, help="rate-control targets (bpp)")
    parser.add_argument("--no-rate-control", action="store_true", help="skip the rate-control table")
    parser.add_argument("--rc-preset", default="balanced", help="preset of the rate-control runs")
    parser.add_argument("--refine-steps", type=int, default=None, help="override refine_steps of every encode")
    parser.add_argument("--lambda-steps", type=int, default=None, help="override lambda_steps of every encode")
    parser.add_argument("--reference-weights", default=None,
                        help="also code the forward pass of this weights file and give BD-rates against it")
    parser.add_argument("--memory", action="store_true",
                        help=f"also measure peak RSS of a max encode of a {MEMORY_SIDE}x{MEMORY_SIDE} image")
    parser.set_defaults(func=_cmd_adapt)
    return parser


def _cmd_adapt(args: argparse.Namespace) -> int:
    from codec.pipeline import Encoder

    overrides = {k: v for k, v in (("refine_steps", args.refine_steps), ("lambda_steps", args.lambda_steps))
                 if v is not None}
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    memory = measure_peak_memory("max", weights=args.weights, overrides=overrides) if args.memory else None
    if args.skip < 0:
        raise ValueError(f"--skip must be 0 or more, got {args.skip}")
    images = load_images(args.data, None if args.limit is None else args.skip + args.limit)[args.skip:]
    summary = run_adapt(images, args.out, encoder=Encoder(weights=args.weights), resume=args.resume,
                        configs=configs, lambdas=args.lambdas,
                        targets=None if args.no_rate_control else args.targets, rc_preset=args.rc_preset,
                        overrides=overrides, memory=memory,
                        reference=Encoder(weights=args.reference_weights) if args.reference_weights else None,
                        log=lambda msg: print(msg, file=sys.stderr, flush=True))
    for cfg, row in summary["stages"].items():
        print(f"{cfg}: BD-rate vs forward {_f(row['bd_rate_vs_forward'], '+.2f')} %, "
              f"{row['seconds_per_encode']:.2f} s/encode")
    if "rate_control" in summary:
        rc = summary["rate_control"]
        print(f"rate control ({rc['preset']}): {100 * rc['within']:.1f} % within ±{rc['tolerance_pct']:.0f} %, "
              f"max overshoot {rc['max_overshoot_pct']:.2f} %")
    print(f"wrote {args.out / 'adapt.json'}, adapt.md, adapt_rd.png")
    return 0


def add_adapt_subparser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers ``adapt`` under the ``bench`` command; it sets ``func`` (returns an exit code)."""
    return _configure(subparsers.add_parser("adapt", help="adaptation stages: BD-rate, time, rate control"))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.adapt_bench``: exit 0 ok, 2 bad input (reason on stderr)."""
    return run_standalone(_configure(argparse.ArgumentParser(prog="metalic bench adapt")), argv)


if __name__ == "__main__":
    sys.exit(main())
