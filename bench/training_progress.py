"""BD-rates against JPEG, WebP and AVIF as training went on: one RD run per snapshot.

    python -m bench.training_progress --run runs/base --data ../shared/datasets/kodak \
        --out runs/progress [--limit 8] [--every 10000]

Each snapshot (``snapshot_*.pt``, then ``last.pt``) is encoded with the forward
pass only (``fast`` preset at fixed λ values inside the run's λ range) and
compared with the anchors on the same images in the same run. Steps per second
come from the run's own log (wall seconds of training, validation excluded).
The anchors are measured once (``anchor_points.json`` in the output folder)
and reused for every later snapshot. Writes ``progress.json`` and ``progress.md`` (a table: step, steps/s since the
previous row, BD-rate against each anchor, and the unquantized-latent PSNR at the
run's top λ: what the transforms reach before rounding). Rows already in ``progress.json``
are kept, so a later session only measures its new snapshots.
"""

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch

from bench.pilots import load_checkpoint, unquantized_psnr
from bench.rd import AnchorCache, RDConfig, load_images, run_rd
from bench.report import bd_percent
from bench.runners import metalic_runner

ANCHORS = ("jpeg", "webp", "avif")


def wall_at(log: Path) -> dict[int, float]:
    """Training wall seconds at each logged step."""
    if not log.exists():
        return {}
    return {int(r["step"]): float(r["wall"]) for r in csv.DictReader(open(log)) if r["kind"] == "train"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="training run folder (snapshot_*.pt, last.pt, log.csv)")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--limit", type=int)
    p.add_argument("--every", type=int, default=10000, help="measure snapshots whose step is a multiple of this")
    p.add_argument("--no-last", action="store_true", help="measure the snapshots only, not last.pt")
    p.add_argument("--lambdas", default=None, help="comma-separated λ (default: 6 log-spaced over the run's range)")
    args = p.parse_args(argv)
    run, out = Path(args.run), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    done = json.loads((out / "progress.json").read_text()) if (out / "progress.json").exists() else []
    walls = wall_at(run / "log.csv")
    images = load_images(args.data, args.limit)
    cache = AnchorCache(out / "anchor_points.json")
    for ckpt in sorted(run.glob("snapshot_*.pt")) + ([] if args.no_last else [run / "last.pt"]):
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        step, c = state["step"], state["config"]
        if any(r["step"] == step for r in done) or (ckpt.name != "last.pt" and step % args.every):
            continue
        lambdas = (tuple(float(v) for v in args.lambdas.split(",")) if args.lambdas
                   else tuple(float(f"{v:.3g}") for v in np.geomspace(c["lmbda_min"], c["lmbda_max"], 6)))
        step_dir = out / f"step_{step:07d}"
        if (step_dir / "summary.json").exists():  # measured by a run that was stopped before its table
            summary = json.loads((step_dir / "summary.json").read_text())
        else:
            summary = run_rd(images, step_dir, metalic_runner(weights=str(ckpt)),
                             RDConfig(lambdas=lambdas, codecs=ANCHORS, timing_runs=0), anchor_cache=cache)
        row = {"step": step, "checkpoint": ckpt.name, "wall_s": walls.get(step),
               "unquantized_psnr_top": unquantized_psnr(load_checkpoint(ckpt)[0], images, c["lmbda_max"])}
        for a in ANCHORS:
            row[f"bd_rate_vs_{a}"] = summary["bd"][a]["bd_rate"]
            row[f"bd_psnr_vs_{a}"] = summary["bd"][a]["bd_psnr"]
        done.append(row)
        done.sort(key=lambda r: r["step"])
        (out / "progress.json").write_text(json.dumps(done, indent=2))
        print(json.dumps(row), flush=True)
    lines = ["| step | steps/s (since previous row) | BD-rate vs JPEG (%) | vs WebP (%) | vs AVIF (%) "
             "| unquantized PSNR at λ_max (dB) |",
             "|---:|---:|---:|---:|---:|---:|"]
    prev = None
    for r in done:
        sps = "–"
        if prev and r.get("wall_s") and prev.get("wall_s"):
            sps = f"{(r['step'] - prev['step']) / (r['wall_s'] - prev['wall_s']):.2f}"
        top = f"{r['unquantized_psnr_top']:.2f}" if r.get("unquantized_psnr_top") is not None else "–"
        lines.append(f"| {r['step']} | {sps} | " + " | ".join(bd_percent(r[f"bd_rate_vs_{a}"]) for a in ANCHORS)
                     + f" | {top} |")
        prev = r
    (out / "progress.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
