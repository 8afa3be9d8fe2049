"""BD-rate against WebP as training went on: one RD run per training snapshot.

    python benchmarks/training_progress.py --run runs/base --data ../shared/datasets/kodak \
        --out runs/progress [--limit 8]

Each snapshot is encoded with the forward pass only (``fast`` preset at fixed
λ values) and compared with WebP on the same images in the same run. Writes
``progress.json`` and ``progress.md`` (a table: step, BD-rate vs WebP, BD-PSNR).
"""

import argparse
import json
import sys
from pathlib import Path

from codec.eval.rd import RDConfig, load_images, run_rd
from codec.eval.runners import metalic_runner


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="training run folder (snapshot_*.pt, last.pt)")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--limit", type=int)
    p.add_argument("--lambdas", default="0.0003,0.001,0.003,0.01,0.03,0.1,0.25")
    args = p.parse_args(argv)
    run = Path(args.run)
    ckpts = sorted(run.glob("snapshot_*.pt")) + [run / "last.pt"]
    images = load_images(args.data, args.limit)
    cfg = RDConfig(lambdas=tuple(float(v) for v in args.lambdas.split(",")), codecs=("webp",))
    rows = []
    for ckpt in ckpts:
        import torch

        step = torch.load(ckpt, map_location="cpu", weights_only=True)["step"]
        if any(r["step"] == step for r in rows):
            continue
        summary = run_rd(images, Path(args.out) / f"step_{step:07d}", metalic_runner(weights=str(ckpt)), cfg)
        bd = summary["bd"]["webp"]
        rows.append({"step": step, "checkpoint": ckpt.name, "bd_rate_vs_webp": bd["bd_rate"], "bd_psnr_vs_webp": bd["bd_psnr"]})
        print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    (out / "progress.json").write_text(json.dumps(rows, indent=2))
    lines = [f"| step | BD-rate vs WebP (%) | BD-PSNR vs WebP (dB) |", "|---:|---:|---:|"]
    lines += [f"| {r['step']} | {r['bd_rate_vs_webp']:+.2f} | {r['bd_psnr_vs_webp']:+.3f} |" for r in rows]
    (out / "progress.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
