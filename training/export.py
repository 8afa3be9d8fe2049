"""``metalic train export`` and ``metalic train plot``.

Export turns a training checkpoint (base or meta) or a bias-bank weights file
into a shipped weights file (float32 state dict with the CDF tables already
built) and records it in the manifest with its sha256, model config, λ range,
steps, wall time, data, log, and (when present) the meta fine-tuning's start
weights and the bias bank's summary. ``default`` names the entry the service
ships; each entry's ``architecture`` is the registry slug it loads as.
"""

import argparse
import csv
import json
import shutil
from pathlib import Path

import torch

from codec.weights import MANIFEST, WEIGHTS_DIR, read_manifest, sha256_file


# Tensors at least this large (the convolution kernels: nearly all the bytes)
# are stored in float16 by ``half=True``; the small ones (biases, gains, GDN
# parameters, quantiles, scale tables) keep float32, where a tiny value would
# lose its precision for no saving.
HALF_MIN_NUMEL = 1024


def export(ckpt: Path, name: str, out_dir: Path = WEIGHTS_DIR, make_default: bool = True, note: str = "",
           architecture: str = "metalic-vr", half: bool = False) -> dict:
    """Writes ``out_dir/<name>.pt`` and its manifest entry.

    With ``half``, the large kernels are rounded to float16 *before* the CDF
    tables are built and stored that way: the model the file describes is the
    rounded one, loaded as float32, and its tables belong to it, so encoder
    and decoder agree exactly and only the file shrinks (about 2x).

    Args:
        ckpt: Path. A training checkpoint (``train base`` or ``train meta``) or a
            weights file (``train bias-bank``'s ``weights.pt``).
        name: str. Manifest key and file stem.
        make_default: bool. True makes this entry the manifest's ``default``.
        architecture: str. Registry slug the weights are for.
        half: bool. Store the large kernels in float16 (see above).
    """
    from codec import models  # noqa: F401  (fills the registry)
    from codec.registry import MODELS

    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    cfg = state["config"]
    train_cfg = state.get("train_config", cfg)
    model_cfg = {k: cfg[k] for k in ("N", "M", "lmbda_min", "lmbda_max")}
    if architecture not in MODELS or hasattr(MODELS[architecture], "load_backend"):
        raise ValueError(f"{architecture!r} is not a metalic-vr architecture")
    net = MODELS[architecture](**model_cfg)
    net.load_state_dict(state["model"])
    halved = set()
    if half:
        with torch.no_grad():
            for key, param in net.named_parameters():
                if param.numel() >= HALF_MIN_NUMEL:
                    param.copy_(param.half().float())
                    halved.add(key)
    net.update(force=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.pt"
    stored = {k: (v.half() if k in halved else v.float()) if v.is_floating_point() else v
              for k, v in net.state_dict().items()}
    torch.save({"model": stored, "config": model_cfg}, path)
    run_dir = ckpt.parent
    entry = {
        "file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size, "architecture": architecture,
        "config": model_cfg, "lmbda_range": [cfg["lmbda_min"], cfg["lmbda_max"]],
        "steps": state.get("step"), "wall_seconds": round(state.get("wall", 0.0), 1),
        "bf16_autocast": state.get("amp"), "train_config": train_cfg, "data": train_cfg.get("data"),
        "train_images": state.get("images"), "note": note,
        "bias_bank_clusters": _bank_rows(net.bias_bank),
        "storage": "float16 kernels" if half else "float32",
    }
    if "init_sha256" in state:  # a fine-tuning checkpoint (train meta, train ecg)
        entry[state.get("recipe", "meta")] = {"init": state.get("init"), "init_sha256": state["init_sha256"]}
    logs = [(run_dir / "log.csv", "log.csv"), (run_dir / "curves.png", "curves.png")]
    if "bias_bank" in state:  # a bias-bank weights file (train bias-bank)
        entry["bias_bank"] = {k: v for k, v in state["bias_bank"].items() if k != "cluster_sizes"}
        # the training log is the source run's; the bank's own log sits beside it
        source_dir = Path(state["source"]).parent if state.get("source") else run_dir
        logs = [(source_dir / "log.csv", "log.csv"), (source_dir / "curves.png", "curves.png"),
                (run_dir / "log.csv", "bias-bank.log.csv")]
    for src, suffix in logs:
        if src.exists():
            shutil.copyfile(src, out_dir / f"{name}.{suffix}")
            entry[suffix.rsplit(".", 1)[0].replace(".", "_")] = f"{name}.{suffix}"
    manifest = read_manifest() if out_dir == WEIGHTS_DIR else _read_local(out_dir / MANIFEST.name)
    manifest["models"][name] = entry
    if make_default or not manifest.get("default"):
        manifest["default"] = name
    (out_dir / MANIFEST.name).write_text(json.dumps(manifest, indent=2) + "\n")
    return entry


def _bank_rows(bank) -> int:
    """Non-zero bank rows (clusters the encoder can pick besides index 0)."""
    nonzero = torch.zeros(bank.bank(0).shape[0], dtype=torch.bool)
    for i in range(bank.num_layers):
        nonzero |= bank.bank(i).ne(0).any(1)
    return int(nonzero.sum())


def _read_local(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"default": None, "models": {}}


def plot(log_path: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(log_path)))
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val"]
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    steps = [int(r["step"]) for r in train]
    for i, key in enumerate(("loss", "bpp", "psnr")):
        vals = [float(r[key]) for r in train]
        k = 20  # moving average: single batches are noisy with random λ
        smooth = [sum(vals[max(0, j - k):j + 1]) / len(vals[max(0, j - k):j + 1]) for j in range(len(vals))]
        ax[i].plot(steps, smooth, label="train (random λ, moving avg)", color="0.5")
        for lam in sorted({r["lmbda"] for r in val}, key=float):
            vr = [r for r in val if r["lmbda"] == lam]
            ax[i].plot([int(r["step"]) for r in vr], [float(r[key]) for r in vr], marker="o", label=f"val λ={float(lam):.4g}")
        ax[i].set_xlabel("step")
        ax[i].set_ylabel(key)
        ax[i].set_yscale("log" if key == "loss" else "linear")
    ax[2].legend(fontsize=7)
    fig.suptitle(f"training curves: {log_path}")
    fig.tight_layout()
    fig.savefig(out, dpi=90)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="last.pt or snapshot_*.pt of a training run")
    p.add_argument("--name", default="metalic-vr", help="registry name the weights are for")
    p.add_argument("--out", default=str(WEIGHTS_DIR))
    p.add_argument("--not-default", action="store_true")
    p.add_argument("--note", default="")
    p.add_argument("--architecture", default="metalic-vr", help="registry slug the weights are for")
    p.add_argument("--half", action="store_true", help="store the convolution kernels in float16 (about half the file)")


def add_plot_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("log", help="log.csv of a training run")
    p.add_argument("-o", "--output", help="PNG path (default: curves.png beside the log)")


def run(args) -> int:
    ckpt = Path(args.checkpoint)
    log = ckpt.parent / "log.csv"
    if log.exists() and "kind" in open(log).readline().split(","):  # a training log (not bias-bank's)
        plot(log, ckpt.parent / "curves.png")
    entry = export(ckpt, args.name, Path(args.out), not args.not_default, args.note, args.architecture, args.half)
    print(json.dumps({k: entry[k] for k in ("file", "sha256", "bytes", "steps", "wall_seconds", "bias_bank_clusters")}))
    return 0


def run_plot(args) -> int:
    log = Path(args.log)
    out = Path(args.output) if args.output else log.parent / "curves.png"
    plot(log, out)
    print(out)
    return 0
