"""``metalic bench meta``: does meta fine-tuning make refinement gain more? (L²C Table II)

Two measurements of a meta-tuned model against the model it started from:

1. **Refinement gain** (the analogue of L²C Table II). For each image, λ,
   iteration count n ∈ {4, 10, 100} and model, the shipped latent refinement
   (:func:`codec.adapt.refine.refine_latents`: Adam, SGA rounding) runs n steps
   at each learning rate of a small grid; the *loss drop* is the start cost
   minus the best hard-quantized cost (``bits/px + λ·255²·MSE``, estimated
   bits), and the best learning rate is kept per image, as in L²C. The table
   reports the mean drop of each model and the relative improvement
   ``(mean drop meta / mean drop base − 1) · 100 %``, and, since the two
   models start from different forward costs, each model's mean cost
   before and after refinement.
2. **Forward-pass BD-rate** of meta against base: real file sizes from
   :meth:`codec.pipeline.Encoder.code` (the plain forward pass at fixed λ, the
   container header included) and PSNR, :func:`bench.bdrate.bd_rate` on
   the average curves and per image. Negative = meta saves bits.

::

    image ─► Encoder(weights=base) ─► y⁰,z⁰ ─► refine n steps × lr grid ─► best drop ┐
          └► Encoder(weights=meta) ─► y⁰,z⁰ ─► refine n steps × lr grid ─► best drop ┴► Δ mean drop %
          └► both: code(λ_i) ─► (bytes·8/px, PSNR) ─► BD-rate(meta vs base)

.. note::
    L²C compares against a *baseline fine-tuning* (the same extra epochs with
    the plain loss); here the baseline is the base model itself. The
    refinement part can run on centre crops (``--crop``) to keep CPU runs short;
    the BD-rate part always codes the full images.

Outputs in ``out_dir``: ``meta.json`` (every measurement) and ``meta.md``.

Typical workflow::

    metalic bench meta --base codec/weights/metalic-vr-base.pt --meta runs/meta/last.pt \\
        --data ../shared/datasets/kodak --out results/meta --limit 4 --crop 256
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import report
from .bdrate import bd_rate
from .rd import load_images, parse_floats, run_standalone

__all__ = ["DEFAULT_LR_GRID", "add_meta_subparser", "main", "refinement_drops", "run_meta_bench"]

DEFAULT_LR_GRID: dict[int, tuple[float, ...]] = {4: (0.0125, 0.025, 0.05), 10: (0.025, 0.05, 0.1), 100: (0.01, 0.02, 0.04)}
"""Iterations → Adam learning rates (latent units) tried; the best per image counts (L²C Table II's LRS).

Chosen on Kodak 256x256 crops with development snapshots (SGA, λ = 0.0067 and
0.018): the best rate was 0.025-0.05 at 4 iterations and 0.05-0.1 at 10; 0.2
gained nothing at either. 100 iterations centre on the refinement default (0.02)."""

DEFAULT_REFINE_LAMBDAS: tuple[float, ...] = (0.0025, 0.0067, 0.018)
"""Dimensionless. λ values of the refinement comparison (about 0.25, 0.5 and 1 bpp)."""

DEFAULT_BD_LAMBDAS: tuple[float, ...] = (0.0009, 0.0025, 0.0067, 0.018, 0.05)
"""Dimensionless. λ points of the forward-pass RD curves."""


def _centre_crop(img: np.ndarray, size: int | None) -> np.ndarray:
    if not size:
        return img
    h, w = img.shape[:2]
    s = min(size, h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return img[top:top + s, left:left + s]


def refinement_drops(backend, img: np.ndarray, lmbda: float, iters: Sequence[int],
                     lr_grid: dict[int, Sequence[float]], rounding: str = "sga", seed: int = 0) -> dict[str, Any]:
    """Loss drop of refinement at each iteration count, best over the learning-rate grid.

    Returns:
        dict: ``start`` (hard RD cost of the forward latents) and, per n,
        ``{"drop", "lr", "drops": {lr: drop}, "seconds"}``.
    """
    import torch

    from codec.adapt.refine import refine_latents
    from codec.image import pad, to_tensor

    h, w = img.shape[:2]
    x = pad(to_tensor(img, backend.device))
    rate_index = backend.rate_index(lmbda)
    with torch.no_grad():
        latents = backend.encode_latents(x, rate_index)
    out: dict[str, Any] = {}
    for n in iters:
        drops, t0 = {}, time.perf_counter()
        for lr in lr_grid[n]:
            res = refine_latents(backend, x, latents, rate_index, n, lmbda=lmbda, rounding=rounding, lr=lr,
                                 size=(h, w), eval_every=1 if n <= 10 else 5, seed=seed)
            out["start"] = res.start.cost
            drops[lr] = res.start.cost - res.best.cost
        best_lr = max(drops, key=drops.get)
        out[str(n)] = {"drop": drops[best_lr], "lr": best_lr, "drops": drops, "seconds": time.perf_counter() - t0}
    return out


def _forward_curve(encoder, img: np.ndarray, lambdas: Sequence[float]) -> list[dict[str, Any]]:
    """Real-file RD points of the plain forward pass at fixed λ (no rate control)."""
    from codec.bitstream import ImageMode
    from codec.image import pad, to_tensor

    x = pad(to_tensor(img, encoder.device))
    pts = []
    for lmbda in lambdas:
        c = encoder.code(x, img, ImageMode.RGB, encoder.backend.rate_index(lmbda))
        pts.append({"lmbda": lmbda, "bytes": len(c.data), "bpp": c.bpp, "psnr": c.psnr})
    return pts


def _bd(base: Sequence[dict], test: Sequence[dict]) -> float | None:
    try:
        return bd_rate([p["bpp"] for p in base], [p["psnr"] for p in base],
                       [p["bpp"] for p in test], [p["psnr"] for p in test])
    except ValueError:
        return None


def _mean_curve(curves: Sequence[Sequence[dict]]) -> list[dict[str, float]]:
    return [{"bpp": float(np.mean([c[i]["bpp"] for c in curves])), "psnr": float(np.mean([c[i]["psnr"] for c in curves]))}
            for i in range(len(curves[0]))]


def run_meta_bench(images: Sequence[tuple[str, np.ndarray]], base_weights: str, meta_weights: str,
                   out_dir: Path | str, *, iters: Sequence[int] = (4, 10, 100),
                   lr_grid: dict[int, Sequence[float]] | None = None,
                   refine_lambdas: Sequence[float] = DEFAULT_REFINE_LAMBDAS,
                   bd_lambdas: Sequence[float] = DEFAULT_BD_LAMBDAS, crop: int | None = None,
                   rounding: str = "sga", device: str = "cpu", model: str = "metalic-vr",
                   log: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Runs both measurements and writes ``meta.json`` and ``meta.md``.

    Args:
        images: sequence of (name, HxWx3 uint8).
        base_weights, meta_weights: str. Weights files ({"model", "config"}).
        out_dir: path. Created; files in it are overwritten.
        iters: iteration counts of the refinement comparison (each needs a grid).
        lr_grid: dict or None. Iterations → learning rates; None is :data:`DEFAULT_LR_GRID`.
        refine_lambdas: λ values of the refinement comparison; empty skips it.
        bd_lambdas: λ values of the forward curves; fewer than 2 skips the BD-rate.
        crop: int or None. Centre crop side for the refinement comparison.
        rounding: str. Relaxed rounding of the refinement.
        device: str. Where the models run.
        model: str. Registry slug both weights files are for.
        log: callable. One progress line per image and model.

    Returns:
        dict. The summary part of ``meta.json``.
    """
    from codec.pipeline import Encoder

    from .speed import machine_info

    if not images:
        raise ValueError("no images to benchmark")
    lr_grid = dict(DEFAULT_LR_GRID if lr_grid is None else lr_grid)
    missing = [n for n in iters if n not in lr_grid]
    if missing:
        raise ValueError(f"no learning-rate grid for {missing} iterations")
    encoders = {"base": Encoder(model, device=device, weights=str(base_weights)),
                "meta": Encoder(model, device=device, weights=str(meta_weights))}
    records = []
    for name, img in images:
        rec: dict[str, Any] = {"image": name, "refine": {}, "forward": {}}
        for which, enc in encoders.items():
            t0 = time.perf_counter()
            rec["refine"][which] = {str(lm): refinement_drops(enc.backend, _centre_crop(img, crop), lm, iters,
                                                               lr_grid, rounding) for lm in refine_lambdas}
            if len(bd_lambdas) >= 2:
                rec["forward"][which] = _forward_curve(enc, img, bd_lambdas)
            log(f"{name}: {which} done ({time.perf_counter() - t0:.1f} s)")
        if len(bd_lambdas) >= 2:
            rec["bd_rate_meta_vs_base"] = _bd(rec["forward"]["base"], rec["forward"]["meta"])
        records.append(rec)

    table = []
    for n in iters:
        row: dict[str, Any] = {"iters": n, "lrs": list(lr_grid[n])}
        for which in encoders:
            vals = [r["refine"][which][str(lm)] for r in records for lm in refine_lambdas]
            if vals:
                row[f"{which}_mean_drop"] = float(np.mean([v[str(n)]["drop"] for v in vals]))
                row[f"{which}_mean_start"] = float(np.mean([v["start"] for v in vals]))
                row[f"{which}_mean_final"] = row[f"{which}_mean_start"] - row[f"{which}_mean_drop"]
                row[f"{which}_lr_counts"] = {str(lr): sum(v[str(n)]["lr"] == lr for v in vals) for lr in lr_grid[n]}
        base_drop = row.get("base_mean_drop")
        # undefined when refinement gains nothing on the base model
        row["delta_mean_drop_pct"] = 100 * (row["meta_mean_drop"] / base_drop - 1) if base_drop else None
        table.append(row)
    summary: dict[str, Any] = {
        "num_images": len(records), "images": [r["image"] for r in records], "crop": crop, "rounding": rounding,
        "refine_lambdas": list(refine_lambdas), "bd_lambdas": list(bd_lambdas), "table": table,
        "weights": {w: {"path": str(p), "hash": encoders[w].loaded.weights_hash.hex()}
                    for w, p in (("base", base_weights), ("meta", meta_weights))},
        "machine": machine_info(),
    }
    if len(bd_lambdas) >= 2:
        curves = {w: _mean_curve([r["forward"][w] for r in records]) for w in encoders}
        per_image = [r["bd_rate_meta_vs_base"] for r in records if r["bd_rate_meta_vs_base"] is not None]
        summary["forward"] = {"curves": curves, "bd_rate_meta_vs_base": _bd(curves["base"], curves["meta"]),
                              "bd_rate_per_image_mean": float(np.mean(per_image)) if per_image else None}
    out_dir = Path(out_dir)
    report.write_json({"summary": summary, "records": records}, out_dir / "meta.json")
    _write_markdown(summary, out_dir / "meta.md")
    return summary


def _f(v, spec: str = ".4f") -> str:
    return "n/a" if v is None else format(v, spec)


def _write_markdown(summary: dict[str, Any], path: Path) -> None:
    crop = f"{summary['crop']}x{summary['crop']} centre crops" if summary["crop"] else "full images"
    lines = [f"# Meta fine-tuning vs base ({summary['num_images']} images)", "",
             f"Base {summary['weights']['base']['path']} ({summary['weights']['base']['hash']}), "
             f"meta {summary['weights']['meta']['path']} ({summary['weights']['meta']['hash']}). "
             f"Machine: {summary['machine']['description']}.", "",
             f"## Refinement loss drop (L²C Table II analogue; {crop}, λ = {summary['refine_lambdas']}, "
             f"{summary['rounding']} rounding, best lr per image)", "",
             "Loss = bits/px + λ·255²·MSE, hard-quantized; start = forward latents, final = after refinement.", "",
             "| iters | learning rates | base start → final (drop) | meta start → final (drop) | Δ mean loss drop |",
             "|---|---|---|---|---|"]
    for row in summary["table"]:
        cells = [f"{_f(row.get(w + '_mean_start'))} → {_f(row.get(w + '_mean_final'))} ({_f(row.get(w + '_mean_drop'))})"
                 for w in ("base", "meta")]
        lines.append(f"| {row['iters']} | {row['lrs']} | {cells[0]} | {cells[1]} | "
                     f"{_f(row.get('delta_mean_drop_pct'), '+.2f')} % |")
    fwd = summary.get("forward")
    if fwd:
        lines += ["", f"## Forward pass (real file sizes, λ = {summary['bd_lambdas']})", "",
                  f"BD-rate of meta vs base: {_f(fwd['bd_rate_meta_vs_base'], '+.2f')} % on the average curves, "
                  f"{_f(fwd['bd_rate_per_image_mean'], '+.2f')} % mean per image (negative = meta saves bits).", "",
                  "| λ | base bpp | base PSNR | meta bpp | meta PSNR |", "|---|---|---|---|---|"]
        for lm, b, m in zip(summary["bd_lambdas"], fwd["curves"]["base"], fwd["curves"]["meta"]):
            lines.append(f"| {lm} | {b['bpp']:.4f} | {b['psnr']:.2f} | {m['bpp']:.4f} | {m['psnr']:.2f} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- CLI

def _grid(text: str) -> dict[int, tuple[float, ...]]:
    """``4:0.05/0.1/0.2,10:0.02/0.05`` → {4: (0.05, 0.1, 0.2), 10: (0.02, 0.05)}."""
    try:
        out = {}
        for part in text.split(","):
            n, lrs = part.split(":")
            out[int(n)] = tuple(float(v) for v in lrs.split("/"))
        return out
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ITERS:LR/LR/...,..., got {text!r}") from None


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = "Refinement gain (L²C Table II) and forward-pass BD-rate of a meta-tuned model vs its base."
    parser.add_argument("--base", required=True, help="weights file of the base model")
    parser.add_argument("--meta", required=True, help="weights file of the meta-tuned model")
    parser.add_argument("--data", type=Path, required=True, help="folder of .png/.jpg images")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--limit", type=int, default=None, help="first N images only (sorted by name)")
    parser.add_argument("--crop", type=int, default=None, help="centre crop side for the refinement part")
    parser.add_argument("--iters", type=lambda s: tuple(int(v) for v in s.split(",")), default=(4, 10, 100))
    parser.add_argument("--lr-grid", type=_grid, default=None, help="e.g. 4:0.05/0.1/0.2,10:0.02/0.05/0.1")
    parser.add_argument("--refine-lambdas", type=parse_floats, default=DEFAULT_REFINE_LAMBDAS)
    parser.add_argument("--bd-lambdas", type=parse_floats, default=DEFAULT_BD_LAMBDAS, help="fewer than 2 skips BD-rate")
    parser.add_argument("--rounding", default="sga", choices=["sga", "noise", "ste"])
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(func=_cmd_meta)
    return parser


def _cmd_meta(args: argparse.Namespace) -> int:
    summary = run_meta_bench(load_images(args.data, args.limit), args.base, args.meta, args.out, iters=args.iters,
                             lr_grid=args.lr_grid, refine_lambdas=args.refine_lambdas, bd_lambdas=args.bd_lambdas,
                             crop=args.crop, rounding=args.rounding, device=args.device,
                             log=lambda msg: print(msg, file=sys.stderr, flush=True))
    for row in summary["table"]:
        print(f"{row['iters']:>4} iters: mean drop base {_f(row.get('base_mean_drop'))}, "
              f"meta {_f(row.get('meta_mean_drop'))} ({_f(row.get('delta_mean_drop_pct'), '+.2f')} %); "
              f"mean final cost base {_f(row.get('base_mean_final'))}, meta {_f(row.get('meta_mean_final'))}")
    if "forward" in summary:
        print(f"forward BD-rate meta vs base: {_f(summary['forward']['bd_rate_meta_vs_base'], '+.2f')} %")
    print(f"wrote {args.out / 'meta.json'}, meta.md")
    return 0


def add_meta_subparser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers ``meta`` under the ``bench`` command; it sets ``func`` (returns an exit code)."""
    return _configure(subparsers.add_parser("meta", help="meta-tuned vs base: refinement gain, forward BD-rate"))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.meta_bench``: exit 0 ok, 2 bad input (reason on stderr)."""
    return run_standalone(_configure(argparse.ArgumentParser(prog="metalic bench meta")), argv)


if __name__ == "__main__":
    sys.exit(main())
