"""Training-recipe pilots side by side: Kodak BD-rates, the transforms' ceiling, speed.

    python -m bench.pilots --runs runs/pilots/* --data ../shared/datasets/kodak \
        --out runs/pilots-eval [--speed]

For each run folder (its ``last.pt``; the pilots stop at the same step):

* BD-rate and BD-PSNR of the forward pass (``fast`` at fixed λ, real files)
  against JPEG and WebP on the same images, with the same λ points for every
  pilot so that each covers the same rates;
* the unquantized-latent PSNR at the run's top λ: ``synthesize(y, λ_max)``
  with y straight from the analysis transform, no rounding. It bounds what any
  amount of rate buys, so it tells a capacity limit from an entropy-model one;
* with ``--speed``, training steps per second measured alone (one process,
  ``--threads`` threads, steps 25 to 75 of a fresh run of the same config).

Writes ``pilots.json`` and ``pilots.md`` under ``--out``.
"""

import argparse
import csv
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.rd import RDConfig, load_images, run_rd
from bench.report import bd_percent
from bench.runners import metalic_runner
from bench.speed import machine_info
from codec.models.variable_rate import VariableRateHyperprior

LAMBDAS = "0.0018,0.0035,0.0067,0.013,0.025,0.0483,0.0932,0.18"


def load_checkpoint(path: Path) -> tuple[VariableRateHyperprior, dict]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    cfg = state["config"]
    net = VariableRateHyperprior(cfg["N"], cfg["M"], cfg["lmbda_min"], cfg["lmbda_max"])
    net.load_state_dict(state["model"])
    return net.eval(), state


@torch.no_grad()
def unquantized_psnr(net: VariableRateHyperprior, images: list[tuple[str, np.ndarray]], lmbda: float) -> float:
    """Mean PSNR (dB, 8-bit output) of synthesize(analysis(x)) without quantization."""
    psnrs = []
    lam = torch.tensor([lmbda])
    for _, img in images:
        h, w = img.shape[:2]
        x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255
        ph, pw = (-h) % 64, (-w) % 64
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
        y_g, _ = net.encode_latents(x, lam)
        x_hat = net.synthesize(y_g, lam)[..., :h, :w].clamp(0, 1)
        x_hat = (x_hat * 255).round()
        mse = ((x_hat - torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float()) ** 2).mean().item()
        psnrs.append(10 * math.log10(255 ** 2 / max(mse, 1e-10)))
    return float(np.mean(psnrs))


def steps_per_second(config: Path, threads: int) -> float:
    """Steps 25..75 of a fresh run of ``config``, alone, with ``threads`` threads."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "metalic", "train", "base", "--config", str(config), "--out", tmp,
                        "--until", "75", "--threads", str(threads), "--val-every", "100000", "--log-every", "25",
                        "--ckpt-every", "100000", "--snapshot-every", "100000", "--quiet"], check=True)
        rows = {int(r["step"]): float(r["wall"]) for r in csv.DictReader(open(Path(tmp) / "log.csv"))
                if r["kind"] == "train"}
    return 50 / (rows[75] - rows[25])


def table(rows: list[dict]) -> str:
    """The pilots as a Markdown table."""
    lines = ["| pilot | step | N/M | λ range | synthesis sees | lr (warm-up) | BD-rate vs JPEG (%) | "
             "BD-rate vs WebP (%) | unquantized PSNR at λ_max (dB) | steps/s alone |",
             "|---|---:|---|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        sps = f"{r['steps_per_s_alone']:.2f}" if "steps_per_s_alone" in r else "–"
        lines.append(f"| {r['run']} | {r['step']} | {r['N']}/{r['M']} | {r['lmbda_range'][0]:g}–{r['lmbda_range'][1]:g} | "
                     f"{r['quant']} | {r['lr']:g} ({r['warmup']}) | {bd_percent(r['bd_rate_vs_jpeg'])} | "
                     f"{bd_percent(r['bd_rate_vs_webp'])} | {r['unquantized_psnr_top']:.2f} | {sps} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, help="training run folders (each with last.pt, config.json)")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--limit", type=int)
    p.add_argument("--lambdas", default=LAMBDAS)
    p.add_argument("--speed", action="store_true", help="also measure steps/s alone")
    p.add_argument("--speed-only", action="store_true",
                   help="measure steps/s alone and add it to the rows already in OUT/pilots.json")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.speed_only:
        saved = json.loads((out / "pilots.json").read_text())
        for row, run in zip(saved["rows"], map(Path, args.runs)):
            assert row["run"] == run.name, f"{run} is not row {row['run']} of pilots.json"
            row["steps_per_s_alone"] = steps_per_second(run / "config.json", args.threads)
            print(json.dumps(row), flush=True)
        saved["speed_machine"] = machine_info()["description"]
        (out / "pilots.json").write_text(json.dumps(saved, indent=2))
        (out / "pilots.md").write_text(table(saved["rows"]))
        print(table(saved["rows"]))
        return 0
    images = load_images(args.data, args.limit)
    cfg = RDConfig(lambdas=tuple(float(v) for v in args.lambdas.split(",")), codecs=("jpeg", "webp"),
                   timing_runs=0)
    rows = []
    for run in map(Path, args.runs):
        net, state = load_checkpoint(run / "last.pt")
        c = state["config"]
        summary = run_rd(images, out / run.name, metalic_runner(weights=str(run / "last.pt")), cfg)
        row = {"run": run.name, "step": state["step"], "N": c["N"], "M": c["M"],
               "lmbda_range": [c["lmbda_min"], c["lmbda_max"]], "quant": c.get("quant", "noise"),
               "lr": c["lr"], "warmup": c.get("warmup", 0), "crop": c["crop"], "batch_size": c["batch_size"],
               "bd_rate_vs_jpeg": summary["bd"]["jpeg"]["bd_rate"], "bd_rate_vs_webp": summary["bd"]["webp"]["bd_rate"],
               "bd_psnr_vs_jpeg": summary["bd"]["jpeg"]["bd_psnr"],
               "unquantized_psnr_top": unquantized_psnr(net, images, c["lmbda_max"])}
        if args.speed:
            row["steps_per_s_alone"] = steps_per_second(run / "config.json", args.threads)
        rows.append(row)
        print(json.dumps(row), flush=True)
    machine = machine_info()["description"]
    (out / "pilots.json").write_text(json.dumps({"machine": machine, "lambdas": args.lambdas, "rows": rows}, indent=2))
    text = table(rows)
    (out / "pilots.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
