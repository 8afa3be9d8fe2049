"""``metalic train bias-bank``: content-specific decoder biases, clustered into a bank (L²C, M6).

Zou et al., "Learning to Learn to Compress" (L²C, 2020), section II-D: after
training, overfit only the decoder's conv biases on each of many 256x256
training patches, cluster the per-patch bias offsets by k-means into 255
clusters, and let the encoder pick one cluster per patch (index 0 = the
trained biases).

::

    patch x, λ ─► g_a, h_a, h_s ─► ŷ (hard-quantized, once, no grad)
                                   │
                 ┌─────────────────┘
                 ▼
        g_s(ŷ; b + δ) ─► MSE(x̂, x) ─► Adam on δ only (a few dozen steps)
                                   │
           δ = (δ_0 | δ_1 | δ_2 | δ_3)  per patch, saved as they come (resumable)
                                   ▼
        k-means (255 centroids) ─► bank_l rows 1..255  (row 0 stays zero)
                                   ▼
                 weights.pt = the model with its bias_bank buffers filled

Speed: the latents are computed once per patch, every parameter but the
offsets is frozen (the backward pass runs through the decoder only and
computes no weight gradients), a batch of patches is optimized at once with
one offset vector per patch (Adam is elementwise, so this is exactly
per-patch Adam), and bf16 autocast runs the decoder where it is native.

.. note::
    With fewer patches than clusters every patch becomes its own cluster and
    the bank's remaining rows stay zero (they decode exactly as index 0).
    Clusters are ordered by size, largest first. Empty k-means clusters are
    dropped, so a bank can hold fewer than 255 non-zero rows; the count is in
    the summary and the manifest.

Typical workflow::

    metalic train bias-bank --weights runs/meta/last.pt --out runs/bias-bank --patches 2000
    metalic train export runs/bias-bank/weights.pt --name metalic-vr
"""

import argparse
import csv
import dataclasses
import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from codec.backends import hard_round
from codec.constants import NUM_BIAS_CLUSTERS, PATCH_SIZE
from codec.weights import sha256_file
from .amp import prepare_run
from .base import truncate_log
from .checkpoint import save_atomic
from .config import TrainConfig
from .data import CropSampler
from .meta import encode, load_init, sample_lmbda

SOURCE_KEYS = ("step", "wall", "amp", "images", "init", "init_sha256")
"""Checkpoint fields the bank's weights file copies from the weights it was built on."""

LOG_FIELDS = ["patches", "wall", "seconds_per_patch", "lmbda", "psnr_before", "psnr_after", "gain_db"]


@dataclass
class BiasBankConfig:
    """Settings of ``metalic train bias-bank``. Every field is a CLI flag of the same name."""

    weights: str = "runs/meta/last.pt"
    data: list[str] = field(default_factory=lambda: list(TrainConfig().data))
    out: str = "runs/bias-bank"
    patches: int = 2000
    steps: int = 30
    lr: float = 1e-3
    batch_size: int = 8
    clusters: int = NUM_BIAS_CLUSTERS - 1
    kmeans_iter: int = 30
    seed: int = 2
    amp: str = "auto"
    threads: int = 0
    save_every: int = 64
    eval_patches: int = 8

    load = classmethod(TrainConfig.load.__func__)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def check(self) -> None:
        if not 1 <= self.clusters <= NUM_BIAS_CLUSTERS - 1:
            raise ValueError(f"clusters must be 1..{NUM_BIAS_CLUSTERS - 1}, got {self.clusters}")
        if self.patches < 1 or self.steps < 1 or self.batch_size < 1:
            raise ValueError("patches, steps and batch_size must be positive")


# ----- overfitting --------------------------------------------------------------------------------
@torch.no_grad()
def quantized_latents(net, x: torch.Tensor, lmbda: torch.Tensor, amp: bool = False) -> torch.Tensor:
    """ŷ_g exactly as the decoder gets it: hard-rounded z and y around the predicted means."""
    y_g, z = encode(net, x, lmbda, amp)
    medians = net.entropy_bottleneck._get_medians()
    z_hat = hard_round(z - medians, "z") + medians
    _, means = net.hyper_synthesis(z_hat)
    return hard_round(y_g - means, "y") + means


def bias_slices(net) -> list[slice]:
    """Where each decoder conv's offsets sit in a concatenated delta vector."""
    out, start = [], 0
    for conv in net.g_s_convs:
        out.append(slice(start, start + conv.out_channels))
        start += conv.out_channels
    return out


def overfit_biases(net, x: torch.Tensor, lmbda: torch.Tensor, steps: int, lr: float, amp: bool = False) -> dict:
    """Per-patch decoder bias offsets minimizing the patch's MSE (latents fixed).

    Args:
        net: VariableRateHyperprior. Its parameters are not modified.
        x: Tensor (B, 3, P, P). Patches in [0, 1].
        lmbda: Tensor (B,). λ per patch (the rate the latents are made at).
        steps: int. Adam steps.
        lr: float. Adam's step size (bias units). The decoder's early layers are
            sensitive: 1e-3 gains most in 20-40 steps on the shipped model;
            1e-2 and above make it worse.
        amp: bool. bf16 autocast for the transforms.

    Returns:
        dict: ``delta`` (B, D) float32 with D = Σ decoder conv channels,
        ``mse_before`` and ``mse_after`` (B,) float32 on the clamped output.
        The offsets are each patch's best iterate (step 0, the zero offset,
        included), so ``mse_after <= mse_before``.
    """
    y_hat = quantized_latents(net, x, lmbda, amp)
    deltas = [torch.zeros(x.shape[0], c.out_channels, device=x.device, requires_grad=True) for c in net.g_s_convs]
    hooks = [conv.register_forward_hook(lambda m, i, o, d=d: o + d[:, :, None, None].to(o.dtype))
             for conv, d in zip(net.g_s_convs, deltas)]
    flags = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(False)  # decoder-only backward, no weight gradients
    dev = x.device.type

    def mse_per_patch() -> torch.Tensor:
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
            x_hat = net.synthesize(y_hat, lmbda).float()
        return (x_hat.clamp(0, 1) - x).pow(2).mean((1, 2, 3))

    try:
        opt = torch.optim.Adam(deltas, lr=lr)
        best_mse = torch.full((x.shape[0],), float("inf"), device=x.device)
        best = [torch.zeros_like(d) for d in deltas]
        for step in range(steps + 1):
            with torch.set_grad_enabled(step < steps):
                mse = mse_per_patch()
            # keep each patch's best iterate: the step-0 zero offset makes the gain never negative
            better = mse.detach() < best_mse
            best_mse = torch.where(better, mse.detach(), best_mse)
            for b, d in zip(best, deltas):
                b[better] = d.detach()[better]
            if step == 0:
                mse_before = mse.detach()
            if step == steps:
                break
            opt.zero_grad(set_to_none=True)
            mse.sum().backward()  # each patch's own gradient: the offsets are per patch
            opt.step()
    finally:
        for h in hooks:
            h.remove()
        for p, f in zip(net.parameters(), flags):
            p.requires_grad_(f)
    return {"delta": torch.cat(best, 1).float(), "mse_before": mse_before, "mse_after": best_mse}


# ----- clustering ---------------------------------------------------------------------------------
def cluster_deltas(deltas: np.ndarray, clusters: int, seed: int = 0, iters: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """k-means of per-patch offsets into at most ``clusters`` centroids.

    Returns:
        (centroids (k, D) float32 ordered by cluster size, largest first;
        sizes (k,) int64). k = min(clusters, patches) minus empty clusters.
    """
    from scipy.cluster.vq import kmeans2

    deltas = np.asarray(deltas, dtype=np.float64)
    if len(deltas) == 0:
        raise ValueError("no bias offsets to cluster")
    if len(deltas) <= clusters:
        # every patch is its own cluster: exact, and k-means would only reorder them
        return deltas.astype(np.float32), np.ones(len(deltas), dtype=np.int64)
    rng = np.random.default_rng(seed)
    centroids, labels = kmeans2(deltas, clusters, iter=iters, minit="++", seed=rng)
    sizes = np.bincount(labels, minlength=clusters)
    order = [c for c in np.argsort(-sizes, kind="stable") if sizes[c] > 0]
    return centroids[order].astype(np.float32), sizes[order].astype(np.int64)


@torch.no_grad()
def bank_gain(net, x: torch.Tensor, lmbda: torch.Tensor, centroids: np.ndarray, amp: bool = False,
              batch: int = 16) -> dict:
    """What the encoder's bias search can gain on one patch: every centroid tried.

    Args:
        x: Tensor (1, 3, P, P). One patch.
        lmbda: Tensor (1,).
        centroids: ndarray (k, D). Offsets (rows 1..k of the bank).

    Returns:
        dict: ``mse0`` (index 0), ``mse_best``, ``index`` (1-based bank row, 0 if none helps).
    """
    y_hat = quantized_latents(net, x, lmbda, amp)
    dev = x.device.type

    def mse(rows: torch.Tensor | None) -> torch.Tensor:
        n = 1 if rows is None else rows.shape[0]
        hooks = [] if rows is None else [
            conv.register_forward_hook(lambda m, i, o, d=rows[:, sl]: o + d[:, :, None, None].to(o.dtype))
            for conv, sl in zip(net.g_s_convs, bias_slices(net))]
        try:
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
                x_hat = net.synthesize(y_hat.expand(n, -1, -1, -1), lmbda.expand(n)).float()
        finally:
            for h in hooks:
                h.remove()
        return (x_hat.clamp(0, 1) - x).pow(2).mean((1, 2, 3))

    mse0 = mse(None)[0].item()
    c = torch.as_tensor(centroids, dtype=torch.float32, device=x.device)
    all_mse = torch.cat([mse(c[i:i + batch]) for i in range(0, len(c), batch)])
    j = int(all_mse.argmin())
    if all_mse[j].item() < mse0:
        return {"mse0": mse0, "mse_best": all_mse[j].item(), "index": j + 1}
    return {"mse0": mse0, "mse_best": mse0, "index": 0}


def write_bank(net, centroids: np.ndarray) -> None:
    """Rows 1..k of every layer's bank from the centroids; row 0 and rows past k are zero."""
    bank = net.bias_bank
    rows = NUM_BIAS_CLUSTERS - 1
    if len(centroids) > rows:
        raise ValueError(f"{len(centroids)} centroids do not fit {rows} bank rows")
    c = torch.as_tensor(centroids, dtype=torch.float32)
    for layer, sl in enumerate(bias_slices(net)):
        b = torch.zeros_like(bank.bank(layer))
        b[1:1 + len(c)] = c[:, sl].to(b.device)
        bank.bank(layer).copy_(b)


# ----- the run ------------------------------------------------------------------------------------
def build_bank(cfg: BiasBankConfig, device: str | None = None, quiet: bool = False) -> dict:
    """Overfits (or resumes overfitting) ``cfg.patches`` patches, clusters, writes ``out/weights.pt``.

    Files in ``cfg.out``: ``deltas.pt`` (per-patch offsets, saved every
    ``save_every`` patches), ``log.csv``, ``weights.pt`` (the model with its
    bank, the format :func:`codec.weights.load_model` reads), ``summary.json``.

    ``eval_patches`` other crops then get the full bias search (every
    cluster tried, as the encoder does), which says what the bank is worth.

    Returns:
        dict. The summary (timings, gains, cluster sizes, held-out search gain).
    """
    cfg.check()
    device, amp, out = prepare_run(cfg, device)
    deltas_path, log_path = out / "deltas.pt", out / "log.csv"
    net, model_cfg = load_init(cfg.weights, device)
    net.eval()
    weights_sha = sha256_file(Path(cfg.weights))
    same_run = ("steps", "lr", "seed")
    D = sum(c.out_channels for c in net.g_s_convs)
    done, wall = 0, 0.0
    deltas = torch.zeros(0, D)
    stats = torch.zeros(0, 3)  # lmbda, mse_before, mse_after
    if deltas_path.exists():
        state = torch.load(deltas_path, map_location="cpu", weights_only=True)
        if state["weights_sha256"] != weights_sha or any(state["config"][k] != getattr(cfg, k) for k in same_run):
            raise ValueError(f"{deltas_path} was made with other weights or settings; use a new --out")
        deltas, stats, done, wall = state["deltas"], state["stats"], state["done"], state["wall"]
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

    def save():
        save_atomic({"deltas": deltas, "stats": stats, "done": done, "wall": wall, "config": cfg.to_dict(),
                     "weights_sha256": weights_sha, "model_config": model_cfg}, deltas_path)

    if done < cfg.patches:
        sampler = CropSampler(cfg.data, crop=PATCH_SIZE)
        new_log = not log_path.exists()
        if not new_log:
            truncate_log(log_path, done, LOG_FIELDS, key="patches")
        log_file = open(log_path, "a", newline="")
        log = csv.DictWriter(log_file, LOG_FIELDS)
        if new_log:
            log.writeheader()
        if not quiet:
            print(f"bias offsets on {device} (bf16 autocast: {amp}), {len(sampler)} images, "
                  f"patches {done}..{cfg.patches}, {cfg.steps} Adam steps each", flush=True)
        bar = tqdm(total=cfg.patches, initial=done, disable=quiet, dynamic_ncols=True, mininterval=5, unit="patch")
        last_save = done
        stop = {"now": False}
        old_handler = signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
        while done < cfg.patches and not stop["now"]:
            n = min(cfg.batch_size, cfg.patches - done)
            t0 = time.perf_counter()
            # one (seed, patch) stream per patch: the same patches whatever batch_size and resume point
            x = torch.cat([sampler.batch(cfg.seed, done + i, 1) for i in range(n)]).to(device)
            lam = torch.cat([sample_lmbda(net.lmbda_min, net.lmbda_max,
                                          torch.Generator().manual_seed(cfg.seed * 1_000_003 + done + i), 1)
                             for i in range(n)]).to(device)
            r = overfit_biases(net, x, lam, cfg.steps, cfg.lr, amp)
            dt = time.perf_counter() - t0
            wall += dt
            deltas = torch.cat([deltas, r["delta"].cpu()])
            stats = torch.cat([stats, torch.stack([lam.cpu(), r["mse_before"].cpu(), r["mse_after"].cpu()], 1)])
            done += n
            bar.update(n)
            p0 = _psnr(r["mse_before"]).mean().item()
            p1 = _psnr(r["mse_after"]).mean().item()
            log.writerow({"patches": done, "wall": round(wall, 2), "seconds_per_patch": round(dt / n, 4),
                          "lmbda": round(float(lam.log().mean().exp()), 6), "psnr_before": round(p0, 4),
                          "psnr_after": round(p1, 4), "gain_db": round(p1 - p0, 4)})
            bar.set_postfix(s_patch=f"{dt / n:.2f}", gain_db=f"{p1 - p0:.3f}")
            if done - last_save >= cfg.save_every or done == cfg.patches or stop["now"]:
                save()
                log_file.flush()
                last_save = done
        bar.close()
        log_file.close()
        signal.signal(signal.SIGTERM, old_handler)
        if stop["now"]:
            if not quiet:
                print(f"stopped after {done} patches; run the same command again to continue", flush=True)
            return {"patches": done, "stopped": True, "seconds_per_patch": round(wall / max(done, 1), 4)}
    # a smaller --patches than already done clusters the first ones (to study the count's effect)
    deltas, stats = deltas[:cfg.patches], stats[:cfg.patches]
    done = len(deltas)

    t0 = time.perf_counter()
    centroids, sizes = cluster_deltas(deltas.numpy(), cfg.clusters, cfg.seed, cfg.kmeans_iter)
    kmeans_s = time.perf_counter() - t0
    write_bank(net, centroids)
    net.update(force=True)
    gains = _psnr(stats[:, 2]) - _psnr(stats[:, 1])
    t0 = time.perf_counter()
    held_out = []
    if cfg.eval_patches:
        # other crops than the training patches (another seed stream), searched as the encoder would
        sampler = CropSampler(cfg.data, crop=PATCH_SIZE)
        for i in range(cfg.eval_patches):
            x = sampler.batch(cfg.seed + 7919, i, 1).to(device)
            lam = sample_lmbda(net.lmbda_min, net.lmbda_max, torch.Generator().manual_seed(cfg.seed + 7919 + i), 1)
            held_out.append(bank_gain(net, x, lam.to(device), centroids, amp))
    eval_s = time.perf_counter() - t0
    ho_gain = [float(_psnr(torch.tensor(h["mse_best"])) - _psnr(torch.tensor(h["mse0"]))) for h in held_out]
    summary = {
        "weights": str(cfg.weights), "weights_sha256": weights_sha, "patches": done, "patch_size": PATCH_SIZE,
        "steps": cfg.steps, "lr": cfg.lr, "clusters": int(len(centroids)), "cluster_sizes": sizes.tolist(),
        "offset_dims": D, "seconds_overfit": round(wall, 2), "seconds_per_patch": round(wall / max(done, 1), 4),
        "seconds_kmeans": round(kmeans_s, 2), "bf16_autocast": amp, "device": str(device),
        "mean_overfit_gain_db": round(gains.mean().item(), 4),
        "median_overfit_gain_db": round(gains.median().item(), 4),
        "held_out_patches": len(held_out),
        "held_out_mean_gain_db": round(float(np.mean(ho_gain)), 4) if held_out else None,
        "held_out_fraction_improved": round(float(np.mean([h["index"] > 0 for h in held_out])), 4) if held_out else None,
        "seconds_held_out_search": round(eval_s, 2),
    }
    # the weights' own history (steps, wall time, training config, meta start) travels with the bank
    source = torch.load(cfg.weights, map_location="cpu", weights_only=True)
    lineage = {k: source[k] for k in SOURCE_KEYS if k in source}
    lineage["train_config"] = source.get("train_config", source.get("config"))
    save_atomic({"model": {k: v.float() if v.is_floating_point() else v for k, v in net.state_dict().items()},
                 "config": model_cfg, **lineage, "bias_bank": summary | {"config": cfg.to_dict()},
                 "source": str(Path(cfg.weights).resolve())}, out / "weights.pt")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if not quiet:
        print(f"{done} patches in {wall:.0f} s ({summary['seconds_per_patch']:.3f} s/patch), "
              f"overfit gain {summary['mean_overfit_gain_db']:.3f} dB mean; {len(centroids)} clusters "
              f"(k-means {kmeans_s:.1f} s); best-cluster gain on {len(held_out)} held-out patches "
              f"{summary['held_out_mean_gain_db']} dB -> {out / 'weights.pt'}", flush=True)
    return summary


def _psnr(mse: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="JSON file with BiasBankConfig fields; flags override it")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.add_argument("--quiet", action="store_true")
    for f in dataclasses.fields(BiasBankConfig):
        flag = f"--{f.name.replace('_', '-')}"
        if f.name == "data":
            p.add_argument(flag, nargs="+", help="training image folders")
        else:
            typ = f.type if isinstance(f.type, type) else {"int": int, "float": float, "str": str}.get(str(f.type), str)
            p.add_argument(flag, dest=f.name, type=typ)


def run(args: argparse.Namespace) -> int:
    names = [f.name for f in dataclasses.fields(BiasBankConfig)]
    cfg = BiasBankConfig.load(args.config, {k: getattr(args, k) for k in names if hasattr(args, k)})
    build_bank(cfg, device=args.device, quiet=args.quiet)
    return 0
