"""``metalic train base``: train the variable-rate model over a log-uniform λ range.

Loss per image: R + λ·255²·MSE (R in bits per pixel from the likelihoods),
averaged over the batch, plus the entropy bottleneck's auxiliary loss on its
own optimizer (CompressAI's examples/train.py recipe).

Checkpoints (``out/last.pt``) hold the model, both optimizers and the step;
batches and noise are seeded by (seed, step), so killing the run at any point
and starting the same command again loses nothing but the steps since the last
checkpoint, and continues exactly as the uninterrupted run would have.
"""

import argparse
import csv
import json
import math
import signal
import time
from pathlib import Path

import torch
from tqdm import tqdm

from codec.models.variable_rate import VariableRateHyperprior
from .amp import prepare_run
from .checkpoint import save_atomic, seed_from
from .config import TrainConfig
from .data import CropSampler, center_crops

LOG_FIELDS = ["step", "wall", "kind", "lmbda", "loss", "bpp", "mse", "psnr", "aux", "lr"]


def rd_loss(out: dict, x: torch.Tensor, lmbda: torch.Tensor) -> dict:
    """Per-batch R + λ·255²·D with its parts (float32)."""
    num_pixels = x.shape[0] * x.shape[2] * x.shape[3]
    bits = [(-torch.log2(lk.float())).flatten(1).sum(1) for lk in out["likelihoods"].values()]
    bpp = sum(bits) / (x.shape[2] * x.shape[3])
    mse = ((out["x_hat"].float() - x) ** 2).mean((1, 2, 3))
    loss = (bpp + lmbda * 255 ** 2 * mse).mean()
    return {"loss": loss, "bpp": bpp.mean(), "mse": mse.mean(), "bpp_i": bpp, "mse_i": mse,
            "num_pixels": num_pixels}


def sample_lmbda(cfg: TrainConfig, gen: torch.Generator, n: int) -> torch.Tensor:
    u = torch.rand(n, generator=gen)
    return torch.exp(math.log(cfg.lmbda_min) + u * (math.log(cfg.lmbda_max) - math.log(cfg.lmbda_min)))


def learning_rate(cfg: TrainConfig, step: int) -> float:
    # A run extended past its decay (``decay_until`` < ``steps``) keeps the schedule it was
    # trained on and holds lr_final for the added steps.
    end = getattr(cfg, "decay_until", 0) or cfg.steps
    start = int(cfg.decay_from * end)
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if step < start:
        return cfg.lr
    f = min(1.0, (step - start) / max(1, end - start))
    return cfg.lr * (cfg.lr_final / cfg.lr) ** f


def make_optimizers(net, cfg: TrainConfig, groups: list[dict] | None = None):
    """Adam on the networks (``groups``: parameter groups, each with an optional ``lr_scale``) and on the quantiles."""
    main = [p for n, p in net.named_parameters() if not n.endswith(".quantiles")]
    aux = [p for n, p in net.named_parameters() if n.endswith(".quantiles")]
    return torch.optim.Adam(groups or main, lr=cfg.lr), torch.optim.Adam(aux, lr=cfg.aux_lr)


class Recipe:
    """What a training command puts into the base loop; this one is ``train base`` itself.

    A fine-tuning command (``train ecg``) subclasses it: another network, more
    parameter groups, an extra loss term and log columns; the loop, the
    seeding, the checkpoints and resume stay the base training's.
    """

    log_fields = LOG_FIELDS

    def build(self, cfg) -> torch.nn.Module:
        return VariableRateHyperprior(cfg.N, cfg.M, cfg.lmbda_min, cfg.lmbda_max)

    def param_groups(self, net, cfg) -> list[dict] | None:
        return None  # one group: every network parameter at the schedule's rate

    def extra_loss(self, net, cfg) -> tuple[torch.Tensor | None, dict]:
        """A term added to the RD loss of a step, and what to log of it."""
        return None, {}

    def checkpoint_fields(self, cfg) -> dict:
        return {}

    def check_resume(self, state: dict, cfg, path: Path) -> None:
        if state["config"]["N"] != cfg.N or state["config"]["M"] != cfg.M:
            raise ValueError(f"{path} was trained with another N/M; use a new --out")

    def validate_extra(self, net, x: torch.Tensor, lmbda: float) -> dict:
        """More columns of a validation row (``x``: the first validation crop)."""
        return {}


BASE = Recipe()


@torch.no_grad()
def validate(net, val: torch.Tensor, cfg: TrainConfig, device, recipe: Recipe = BASE) -> list[dict]:
    """Quantized (not noisy) RD at three λ values on fixed centre crops, float32."""
    net.eval()
    rows = []
    for lmbda in (cfg.lmbda_min * 2, math.sqrt(cfg.lmbda_min * cfg.lmbda_max), cfg.lmbda_max / 2):
        tot = {"loss": 0.0, "bpp": 0.0, "mse": 0.0, "psnr": 0.0}
        for i in range(0, len(val), 8):
            x = val[i:i + 8].to(device)
            lam = torch.full((x.shape[0],), lmbda, device=device)
            out = net(x, lam)
            out["x_hat"] = out["x_hat"].clamp(0, 1)
            r = rd_loss(out, x, lam)
            n = x.shape[0]
            tot["loss"] += r["loss"].item() * n
            tot["bpp"] += r["bpp_i"].sum().item()
            tot["mse"] += r["mse_i"].sum().item()
            tot["psnr"] += (10 * torch.log10(1 / r["mse_i"].clamp_min(1e-10))).sum().item()
        rows.append({"kind": "val", "lmbda": lmbda, **{k: v / len(val) for k, v in tot.items()},
                     **recipe.validate_extra(net, val[:1].to(device), lmbda)})
    net.train()
    return rows


def train(cfg: TrainConfig, device: str | None = None, quiet: bool = False, recipe: Recipe = BASE) -> Path:
    """Runs (or resumes) training until ``cfg.steps``; returns the checkpoint path."""
    device, amp, out = prepare_run(cfg, device)
    ckpt_path, log_path = out / "last.pt", out / "log.csv"

    torch.manual_seed(cfg.seed)  # the initialisation too: same seed, same run
    net = recipe.build(cfg).to(device)
    opt, aux_opt = make_optimizers(net, cfg, recipe.param_groups(net, cfg))
    step, wall = 0, 0.0
    if cfg.resume and seed_from(Path(cfg.resume), out):
        print(f"resuming from the published checkpoint {cfg.resume}", flush=True)
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        recipe.check_resume(state, cfg, ckpt_path)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        aux_opt.load_state_dict(state["aux_optimizer"])
        step, wall = state["step"], state["wall"]
    elif cfg.init:
        # continue training shipped weights (fresh optimizer): the checkpoint lives outside the repo
        net.load_state_dict(torch.load(cfg.init, map_location=device, weights_only=True)["model"])
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    if amp and device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)

    sampler = CropSampler(cfg.data, crop=cfg.crop)
    val = center_crops(cfg.val, cfg.val_size, cfg.val_images) if cfg.val else None
    new_log = not log_path.exists()
    log_file = open(log_path, "a", newline="")
    log = csv.DictWriter(log_file, recipe.log_fields, extrasaction="ignore")
    if new_log:
        log.writeheader()
    else:
        truncate_log(log_path, step, recipe.log_fields)

    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))

    def checkpoint():
        save_atomic({"model": net.state_dict(), "optimizer": opt.state_dict(),
                     "aux_optimizer": aux_opt.state_dict(), "step": step, "wall": wall,
                     "config": cfg.to_dict(), "amp": amp, "images": len(sampler),
                     **recipe.checkpoint_fields(cfg)}, ckpt_path)
        log_file.flush()

    if not quiet:
        print(f"training on {device} (bf16 autocast: {amp}), {len(sampler)} images, from step {step}", flush=True)
    bar = tqdm(total=cfg.steps, initial=step, disable=quiet, dynamic_ncols=True, mininterval=5)
    net.train()
    t_last = time.perf_counter()
    last = min(cfg.steps, cfg.until) if cfg.until else cfg.steps
    while step < last and not stop["now"]:
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        x = sampler.batch(cfg.seed, step, cfg.batch_size).to(device)
        lam = sample_lmbda(cfg, gen, x.shape[0]).to(device)
        if amp and device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        torch.manual_seed(cfg.seed * 1_000_003 + step)  # the quantization noise
        lr = learning_rate(cfg, step)
        for g in opt.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        r = rd_loss(net(x, lam, amp=amp, quant=cfg.quant), x, lam)
        term, extra = recipe.extra_loss(net, cfg)
        loss = r["loss"] if term is None else r["loss"] + term
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
        opt.step()
        aux = net.aux_loss()
        aux_opt.zero_grad(set_to_none=True)
        aux.backward()
        aux_opt.step()
        step += 1
        now = time.perf_counter()
        wall += now - t_last
        t_last = now
        bar.update(1)
        if step % cfg.log_every == 0:
            psnr = 10 * math.log10(1 / max(r["mse"].item(), 1e-10))
            log.writerow({"step": step, "wall": round(wall, 1), "kind": "train", "lmbda": "",
                          "loss": r["loss"].item(), "bpp": r["bpp"].item(), "mse": r["mse"].item(),
                          "psnr": psnr, "aux": aux.item(), "lr": lr, **extra})
            bar.set_postfix(loss=f"{r['loss'].item():.3f}", bpp=f"{r['bpp'].item():.3f}", sps=f"{step / max(wall, 1e-9):.2f}")
        if val is not None and (step % cfg.val_every == 0 or step == last):
            for row in validate(net, val, cfg, device, recipe):
                log.writerow({"step": step, "wall": round(wall, 1), "aux": "", "lr": lr, **row})
        if step % cfg.snapshot_every == 0:
            save_atomic({"model": net.state_dict(), "step": step, "config": cfg.to_dict()}, out / f"snapshot_{step:07d}.pt")
        if step % cfg.ckpt_every == 0:
            checkpoint()
    checkpoint()
    bar.close()
    log_file.close()
    if not quiet:
        print(f"stopped at step {step} after {wall:.0f} s ({step / max(wall, 1e-9):.2f} steps/s)", flush=True)
    return ckpt_path


def truncate_log(log_path: Path, step: int, fields: list[str] = LOG_FIELDS, key: str = "step") -> None:
    """Drops log rows written after the checkpoint we resume from (rows with ``key`` > step)."""
    rows = list(csv.DictReader(open(log_path)))
    keep = [r for r in rows if int(r[key]) <= step]
    if len(keep) != len(rows):
        with open(log_path, "w", newline="") as f:
            w = csv.DictWriter(f, fields)
            w.writeheader()
            w.writerows(keep)


def add_arguments(p: argparse.ArgumentParser, config_cls: type = TrainConfig) -> None:
    p.add_argument("--config", help=f"JSON file with {config_cls.__name__} fields; flags override it")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.add_argument("--quiet", action="store_true")
    for f in config_cls.__dataclass_fields__.values():
        if f.name == "data":
            p.add_argument("--data", nargs="+", help="training image folders")
        else:
            typ = f.type if isinstance(f.type, type) else {"int": int, "float": float, "str": str}.get(str(f.type), str)
            p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=typ)


def run(args: argparse.Namespace) -> int:
    fields = TrainConfig.__dataclass_fields__
    cfg = TrainConfig.load(args.config, {k: getattr(args, k) for k in fields if hasattr(args, k)})
    train(cfg, device=args.device, quiet=args.quiet)
    return 0
