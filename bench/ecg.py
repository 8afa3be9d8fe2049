"""``metalic bench ecg``: what energy-based channel gating (M3) saves, dense vs gated, side by side.

For each image and λ, the dense default model and the gated one each encode
through the worker's own path (:class:`codec.pipeline.Encoder`, ``fast``
preset at that λ) and the benchmark reports:

* bpp and PSNR of the real streams (the PSNR loss in percent of the dense one);
* the FLOPs torch counts in each transform (``codec.models.gated.transform_flops``:
  every convolution actually executed, GDN's 1x1 included, so the gated
  model's sliced convolutions count what they compute);
* wall time of the full decode (:func:`codec.pipeline.decode`: parse, entropy
  decoding, hyper-synthesis, synthesis) and of the synthesis alone, dense and
  gated measured alternately, ``runs`` times each after a warm-up, median kept.
  The gated model's sliced convolutions run channels-last (oneDNN); the dense
  synthesis is timed in that layout too, so that the gain of gating itself is
  told apart from the layout's.

Medians over images per λ are printed as a table (and written as JSON with
``--out``). Wall times depend on what else the machine runs; the dense/gated
ratio, measured alternately in one process, is the figure to read.

``--alpha`` sets every gate's α in this process before encoding (a what-if for
a model not yet fine-tuned: it shows what the sliced convolutions save at that
sparsity, and what the untrained gates cost in PSNR).

Typical use::

    metalic bench ecg --data ../shared/datasets/kodak --images 6 --runs 5
    metalic bench ecg --gated-weights runs/export/metalic-vr-ecg.pt --out results/ecg.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from codec.determinism import single_thread
from codec.image import pad, to_tensor
from codec.metrics import psnr
from codec.models.gated import TRANSFORMS, transform_flops
from codec.pipeline import Encoder, decode
from .rd import load_images, run_standalone

__all__ = ["add_ecg_subparser", "bench_image", "main", "summarize"]

DEFAULT_LAMBDAS = (0.0025, 0.0067, 0.018)
"""Dimensionless. λ points (about 0.25, 0.5 and 1 bpp with the shipped model)."""


def _alternate(fns: dict, runs: int) -> dict[str, float]:
    """Median seconds of each callable, called in turn ``runs`` times after one warm-up each."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_image(rgb: np.ndarray, lmbda: float, encoders: dict[str, Encoder], runs: int) -> dict:
    """One image at one λ for each named encoder ("dense", "gated")."""
    row, decoders, synths = {}, {}, {}
    x = pad(to_tensor(rgb, "cpu"))
    lam = torch.tensor([lmbda])
    for kind, enc in encoders.items():
        res = enc.encode(Image.fromarray(rgb), {"model": enc.loaded.name, "lmbda": lmbda, "preset": "fast"})
        net = enc.backend.net
        flops = transform_flops(net, x, lam)
        with torch.no_grad():
            y_g, z = net.encode_latents(x, lam)
            y_hat = net.compress_latents(y_g, z)["y_hat"]

        def synth(net=net, y_hat=y_hat):
            with torch.no_grad(), single_thread():
                net.synthesize(y_hat, lam)

        decoders[kind] = lambda data=res.bitstream, w=enc.weights: decode(data, weights=w)
        synths[kind] = synth
        if kind == "dense":  # the layout the gated model's sliced convolutions use, for a like-for-like time
            net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
            synths["dense_cl"] = lambda net=net_cl, y=y_hat.contiguous(memory_format=torch.channels_last): synth(net, y)
        row[kind] = {"bpp": res.metadata["bpp"], "psnr": psnr(rgb, res.reconstruction),
                     "gflops": {t: flops[t] / 1e9 for t in TRANSFORMS}}
    for kind, sec in _alternate(decoders, runs).items():
        row[kind]["decode_s"] = sec
    times = _alternate(synths, runs)
    row["dense"]["synthesis_cl_s"] = times.pop("dense_cl")
    for kind, sec in times.items():
        row[kind]["synthesis_s"] = sec
    return row


def summarize(rows: list[dict]) -> dict:
    """Medians over images of one λ's rows, and the dense/gated ratios."""
    med = lambda f: statistics.median(f(r) for r in rows)  # noqa: E731
    out = {}
    for kind in ("dense", "gated"):
        out[kind] = {"bpp": med(lambda r: r[kind]["bpp"]), "psnr": med(lambda r: r[kind]["psnr"]),
                     "decode_s": med(lambda r: r[kind]["decode_s"]),
                     "synthesis_s": med(lambda r: r[kind]["synthesis_s"]),
                     **({"synthesis_cl_s": med(lambda r: r[kind]["synthesis_cl_s"])} if kind == "dense" else {}),
                     "gflops": {t: med(lambda r: r[kind]["gflops"][t]) for t in TRANSFORMS}}
    out["ratio"] = {
        **{f"flops_{t}": med(lambda r: r["dense"]["gflops"][t] / r["gated"]["gflops"][t]) for t in TRANSFORMS},
        "flops_g_a+g_s": med(lambda r: (r["dense"]["gflops"]["g_a"] + r["dense"]["gflops"]["g_s"])
                             / (r["gated"]["gflops"]["g_a"] + r["gated"]["gflops"]["g_s"])),
        "flops_total": med(lambda r: sum(r["dense"]["gflops"].values()) / sum(r["gated"]["gflops"].values())),
        "decode_time": med(lambda r: r["dense"]["decode_s"] / r["gated"]["decode_s"]),
        "synthesis_time": med(lambda r: r["dense"]["synthesis_s"] / r["gated"]["synthesis_s"]),
        "synthesis_time_cl": med(lambda r: r["dense"]["synthesis_cl_s"] / r["gated"]["synthesis_s"]),
        "psnr_loss_pct": med(lambda r: 100 * (r["dense"]["psnr"] - r["gated"]["psnr"]) / r["dense"]["psnr"]),
    }
    return out


def _table(summary: dict) -> str:
    lines = ["| λ | bpp dense / gated | PSNR dense / gated | PSNR loss % | FLOPs ratio g_a, h_a, h_s, g_s | "
             "g_a+g_s | all | decode ms dense / gated (ratio) | synthesis ms dense / gated (ratio) | "
             "synthesis ms dense channels-last (ratio) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for lmbda, s in summary.items():
        d, g, r = s["dense"], s["gated"], s["ratio"]
        lines.append(
            f"| {lmbda} | {d['bpp']:.4f} / {g['bpp']:.4f} | {d['psnr']:.2f} / {g['psnr']:.2f} | "
            f"{r['psnr_loss_pct']:.2f} | " + ", ".join(f"{r[f'flops_{t}']:.2f}x" for t in TRANSFORMS) +
            f" | {r['flops_g_a+g_s']:.2f}x | {r['flops_total']:.2f}x | "
            f"{1e3 * d['decode_s']:.1f} / {1e3 * g['decode_s']:.1f} ({r['decode_time']:.2f}x) | "
            f"{1e3 * d['synthesis_s']:.1f} / {1e3 * g['synthesis_s']:.1f} ({r['synthesis_time']:.2f}x) | "
            f"{1e3 * d['synthesis_cl_s']:.1f} ({r['synthesis_time_cl']:.2f}x) |")
    return "\n".join(lines)


def _crop(img: np.ndarray, size: int | None) -> np.ndarray:
    """The centre ``size`` x ``size`` crop (the whole image when it is smaller, or with no size)."""
    if not size:
        return img
    h, w = img.shape[:2]
    top, left = (h - min(size, h)) // 2, (w - min(size, w)) // 2
    return img[top:top + size, left:left + size]


def _run(args: argparse.Namespace) -> int:
    from .speed import machine_info

    if args.runs < 1:
        raise ValueError(f"runs must be >= 1, got {args.runs}")
    images = load_images(args.data, args.images)
    encoders = {"dense": Encoder(args.dense, "cpu", args.dense_weights),
                "gated": Encoder(args.gated, "cpu", args.gated_weights)}
    gates = getattr(encoders["gated"].backend.net, "gates", None)
    if gates is None:
        raise ValueError(f"{args.gated} has no channel gates")
    if args.alpha is not None:
        with torch.no_grad():
            for g in gates().values():
                g.alpha.fill_(args.alpha)
    per_lambda = {}
    for lmbda in args.lambdas:
        rows = []
        for name, img in images:
            rows.append(bench_image(_crop(img, args.crop), lmbda, encoders, args.runs))
            print(f"λ={lmbda} {name}: FLOPs {rows[-1]['dense']['gflops']['g_s']:.2f} -> "
                  f"{rows[-1]['gated']['gflops']['g_s']:.2f} G in g_s", file=sys.stderr, flush=True)
        per_lambda[lmbda] = summarize(rows) | {"images": [n for n, _ in images]}
    info = machine_info()
    print(f"dense {args.dense} vs gated {args.gated}{'' if args.alpha is None else f' (every α set to {args.alpha})'}, "
          f"{len(images)} images{f' ({args.crop} px crops)' if args.crop else ''}, median of {args.runs} "
          f"alternating runs; {info['description']}")
    print(_table(per_lambda))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"machine": info, "alpha": args.alpha, "runs": args.runs,
                                              "lambdas": {str(k): v for k, v in per_lambda.items()}}, indent=2))
    return 0


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.description = "Dense vs gated (M3): counted FLOPs per transform, decode and synthesis time, RD."
    p.add_argument("--data", default="../shared/datasets/kodak", help="image folder (default: Kodak)")
    p.add_argument("--images", type=int, default=6, help="first N images (default 6)")
    p.add_argument("--crop", type=int, default=None, help="centre crop side in pixels (default: whole images)")
    p.add_argument("--lambdas", type=float, nargs="+", default=list(DEFAULT_LAMBDAS))
    p.add_argument("--runs", type=int, default=5, help="timed runs of each side (default 5)")
    p.add_argument("--dense", default="metalic-vr", help="registry name of the dense model")
    p.add_argument("--dense-weights", default=None, help="weights file of the dense model (default: shipped)")
    p.add_argument("--gated", default="metalic-vr-ecg", help="registry name of the gated model")
    p.add_argument("--gated-weights", default=None, help="weights file of the gated model (default: shipped)")
    p.add_argument("--alpha", type=float, default=None, help="set every gate's α (what-if, this process only)")
    p.add_argument("--out", default=None, help="write the medians as JSON here")
    p.set_defaults(func=_run)
    return p


def add_ecg_subparser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers ``ecg`` under the ``bench`` command; it sets ``func`` (returns an exit code)."""
    return _configure(subparsers.add_parser("ecg", help="channel gating (M3): FLOPs and time, dense vs gated"))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.ecg``: exit 0 ok, 2 bad input (reason on stderr)."""
    return run_standalone(_configure(argparse.ArgumentParser(prog="metalic bench ecg")), argv)


if __name__ == "__main__":
    sys.exit(main())
