"""``metalic train meta``: MAML-style fine-tuning for latent refinement (L²C, M5).

Zou et al., "Learning to Learn to Compress" (L²C, 2020), section II-C: after
ordinary training, fine-tune every network so that test-time latent
refinement (M1) gains more in few steps. One training image is one MAML task;
support and query set are the same image.

::

    x ─► g_a, h_a ─► (y⁰, z⁰) ──────────────── inner loop, n steps ───────────────┐
                        │   (y, z) ─► relaxed round ─► h_s, g_s ─► L_x(y, z; θ)     │
                        │       ▲                                  │ ∂/∂y, ∂/∂z  │
                        │       └──── y += step_α(∂L/∂y) ◄─────────┘             │
                        ▼                                                        ▼
            L_x(y⁰, z⁰; θ)  (plain forward loss)                   L_x(yⁿ, zⁿ; θ)  (refined loss)
                        └──── w · ─────────────── + ───────── (1 - w) · ──────────┘
                                                  ▼
                                  outer Adam step on θ (all networks)

``L_x = bits/px + λ·255²·MSE`` with a per-image λ drawn log-uniformly over the
model's range, exactly the base training loss. The inner update is on offsets
``(dy, dz)`` added to ``(y⁰, z⁰)``, so ∂L/∂dy is the partial derivative in y
(z held fixed), as test-time refinement sees it, while the outer gradient
still reaches the encoder through ``y⁰``.

* First-order (default, Nichol et al. 2018): the inner steps are constants, the
  outer gradient flows through ``y⁰ + Δ`` and directly into h_s, g_s and the
  entropy model.
* Second-order (``--second-order``): the inner gradients are built with
  ``create_graph`` and differentiated through (L²C eq. 10). About twice the
  memory and time per inner step; it is only informative with
  ``inner_opt="sgd"``: Adam's first step is ``α·sign(g)``, whose derivative in θ
  is zero.

The plain forward loss is the inner loop's first evaluation (same noise, same
graph), so keeping ``forward_weight`` of it costs no extra forward pass; it
keeps the forward-pass RD from degrading, which the shipped encoder's fast
preset depends on.

Checkpoints, seeded batches and the CSV log follow :mod:`training.base`:
kill the run and start the same command again to resume.

Typical workflow::

    metalic train meta --config configs/meta.json --out runs/meta
    metalic train meta --config configs/meta.json --out runs/meta-baseline --inner-steps 0   # L²C's control
    metalic train export runs/meta/last.pt --name metalic-vr-meta --not-default --out runs/export
    metalic train export runs/meta-baseline/last.pt --name metalic-vr-ft --not-default --out runs/export
    metalic bench meta --base runs/export/metalic-vr-ft.pt --meta runs/export/metalic-vr-meta.pt \
        --data ../shared/datasets/kodak --out results/meta --crop 256
"""

import argparse
import csv
import dataclasses
import json
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from codec.adapt.refine import Rounding
from codec.backends import eb_likelihood, hard_round
from codec.models.variable_rate import VariableRateHyperprior
from codec.weights import sha256_file
from .amp import prepare_run
from .base import learning_rate, truncate_log  # learning_rate reads steps, lr, lr_final, decay_from, warmup
from .checkpoint import save_atomic
from .config import TrainConfig
from .data import CropSampler, center_crops

LOG_FIELDS = ["step", "wall", "kind", "lmbda", "loss", "loss_fwd", "loss_ref", "drop", "bpp", "psnr", "aux", "lr"]
MODEL_KEYS = ("N", "M", "lmbda_min", "lmbda_max")
INNER_OPTS = ("adam", "sgd")
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass
class MetaConfig:
    """Settings of ``metalic train meta``. Every field is a CLI flag of the same name.

    ``inner_lr`` is in latent units (quantization bins) per step for Adam; for
    SGD the inner loss is in bits (the per-pixel loss times the pixel count),
    so ``inner_lr`` is in bins per bit of loss gradient. ``inner_steps = 0``
    is L²C's *baseline fine-tuning* (the plain loss, same schedule), the
    control a meta run is compared with. Validation always refines
    ``val_steps`` steps, so a meta run and its baseline log comparable drops.

    ``outer_encoder = False`` stops the refined loss's gradient at ``y⁰``: the
    encoder then learns from the forward loss only, and the refined loss
    trains h_s, g_s and the entropy model to be good *after* refinement. With
    it True (L²C), the encoder also learns to output latents that are already
    close to the refined ones, which lowers the final cost but also the drop
    refinement still finds.
    """

    init: str = "codec/weights/metalic-vr-base.pt"
    data: list[str] = field(default_factory=lambda: list(TrainConfig().data))
    val: str = "../shared/datasets/train/bsds500/val"
    out: str = "runs/meta"
    steps: int = 2000
    batch_size: int = 8
    crop: int = 128
    lr: float = 2e-5
    lr_final: float = 5e-6
    decay_from: float = 0.5
    warmup: int = 0
    aux_lr: float = 1e-3
    clip: float = 1.0
    inner_steps: int = 4
    inner_lr: float = 0.05
    inner_opt: str = "adam"
    rounding: str = "noise"
    second_order: bool = False
    forward_weight: float = 0.5
    outer_encoder: bool = True
    seed: int = 1
    amp: str = "auto"
    threads: int = 0
    ckpt_every: int = 50
    val_every: int = 250
    val_steps: int = 4
    val_images: int = 8
    val_size: int = 256
    log_every: int = 10

    # the same JSON + flags rules as TrainConfig
    load = classmethod(TrainConfig.load.__func__)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def check(self) -> None:
        if not 0 <= self.inner_steps <= 16:
            raise ValueError(f"inner_steps must be 0..16, got {self.inner_steps}")
        if self.inner_opt not in INNER_OPTS:
            raise ValueError(f"inner_opt must be one of {INNER_OPTS}, got {self.inner_opt!r}")
        if self.rounding not in ("noise", "sga"):
            raise ValueError(f"rounding must be noise or sga, got {self.rounding!r}")
        if not 0.0 <= self.forward_weight < 1.0:
            raise ValueError(f"forward_weight must be in [0, 1), got {self.forward_weight}")


# ----- the differentiable RD loss and inner loop ------------------------------------------------
def rd_terms(net, x: torch.Tensor, y_g: torch.Tensor, z: torch.Tensor, lmbda: torch.Tensor, round_fn,
             amp: bool) -> dict:
    """Per-image R + λ·255²·D of given latents under a (relaxed) rounding.

    The batched twin of :meth:`codec.backends.VariableRateBackend.rd_terms`
    (one λ per image, likelihoods lower-bounded as in training).

    Returns:
        dict of float32 tensors (B,): ``loss_i``, ``bpp_i``, ``mse_i``; and
        ``x_hat`` (B, 3, H, W) float32, not clamped.
    """
    dev = x.device.type
    eb, gc = net.entropy_bottleneck, net.gaussian_conditional
    medians = eb._get_medians().detach()
    z_t = round_fn(z - medians, "z") + medians
    z_lik = eb.likelihood_lower_bound(eb_likelihood(eb, z_t))
    with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
        scales, means = net.hyper_synthesis(z_t)
    y_t = round_fn(y_g - means, "y") + means
    with torch.autocast(dev, enabled=False):
        y_lik = gc.likelihood_lower_bound(gc._likelihood(y_t, scales, means))
    with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
        x_hat = net.synthesize(y_t, lmbda).float()
    bits = (-torch.log2(y_lik)).flatten(1).sum(1) + (-torch.log2(z_lik)).flatten(1).sum(1)
    bpp = bits / (x.shape[2] * x.shape[3])
    mse = (x_hat - x).pow(2).mean((1, 2, 3))
    return {"loss_i": bpp + lmbda * 255**2 * mse, "bpp_i": bpp, "mse_i": mse, "x_hat": x_hat}


def _adam_update(g: torch.Tensor, state: dict, k: int, lr: float, smooth: bool) -> torch.Tensor:
    """One Adam step (torch.optim.Adam's formula), written out so it can be differentiated."""
    b1, b2 = ADAM_BETAS
    state["m"] = b1 * state.get("m", 0.0) + (1 - b1) * g
    state["v"] = b2 * state.get("v", 0.0) + (1 - b2) * g * g
    m_hat, v_hat = state["m"] / (1 - b1 ** (k + 1)), state["v"] / (1 - b2 ** (k + 1))
    # sqrt has an infinite derivative at 0: second-order mode smooths it
    denom = torch.sqrt(v_hat + ADAM_EPS**2) if smooth else v_hat.sqrt() + ADAM_EPS
    return -lr * m_hat / denom


def inner_loop(net, x: torch.Tensor, y0: torch.Tensor, z0: torch.Tensor, lmbda: torch.Tensor, *, steps: int,
               lr: float, opt: str = "adam", rounding: str = "noise", second_order: bool = False,
               keep_forward: bool = True, amp: bool = False) -> dict:
    """n steps of latent refinement that the outer loop can differentiate.

    Args:
        net: VariableRateHyperprior.
        x: Tensor (B, 3, H, W). The images.
        y0, z0: Tensors. Forward latents (with their graph to g_a, h_a, or detached).
        lmbda: Tensor (B,). λ per image.
        steps: int. Inner steps n.
        lr: float. α (see :class:`MetaConfig`).
        opt: str. "adam" or "sgd".
        rounding: str. "noise" (uniform noise) or "sga" (annealed over the n steps).
        second_order: bool. True keeps the inner gradients' graph (create_graph).
        keep_forward: bool. True keeps the first evaluation's graph, returned as
            the plain forward loss.
        amp: bool. bf16 autocast for the transforms.

    Returns:
        dict: ``y``, ``z`` (refined latents, differentiable per the mode),
        ``dy``, ``dz`` (the offsets alone), ``forward`` (rd_terms dict of the
        start, or None), ``round_fn``.
    """
    round_fn = Rounding(rounding, steps)
    dy = torch.zeros_like(y0, requires_grad=True)
    dz = torch.zeros_like(z0, requires_grad=True)
    states = ({}, {})
    forward = None
    scale = x.shape[2] * x.shape[3] if opt == "sgd" else 1.0
    for k in range(steps):
        round_fn.set_step(k)
        with_graph = second_order or (k == 0 and keep_forward)
        yb, zb = (y0, z0) if with_graph else (y0.detach(), z0.detach())
        r = rd_terms(net, x, yb + dy, zb + dz, lmbda, round_fn, amp)
        if k == 0 and keep_forward:
            forward = r
        g_y, g_z = torch.autograd.grad(r["loss_i"].sum() * scale, [dy, dz], retain_graph=with_graph,
                                       create_graph=second_order)
        steps_ = []
        for g, st in zip((g_y, g_z), states):
            steps_.append(_adam_update(g, st, k, lr, second_order) if opt == "adam" else -lr * g)
        if second_order:
            dy, dz = dy + steps_[0], dz + steps_[1]
        else:
            dy = (dy + steps_[0]).detach().requires_grad_(True)
            dz = (dz + steps_[1]).detach().requires_grad_(True)
    if not second_order:
        dy, dz = dy.detach(), dz.detach()
    return {"y": y0 + dy, "z": z0 + dz, "dy": dy, "dz": dz, "forward": forward, "round_fn": round_fn}


# ----- loading ------------------------------------------------------------------------------------
def load_init(path: str | Path, device) -> tuple[VariableRateHyperprior, dict]:
    """A model from a training checkpoint or a weights file (both hold "model" and "config")."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model_cfg = {k: state["config"][k] for k in MODEL_KEYS if k in state["config"]}
    net = VariableRateHyperprior(**model_cfg)
    net.load_state_dict(state["model"])
    return net.to(device), net.config()


def sample_lmbda(lo: float, hi: float, gen: torch.Generator, n: int) -> torch.Tensor:
    u = torch.rand(n, generator=gen)
    return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


def meta_step(net, x, lam, cfg: MetaConfig, amp: bool) -> dict:
    """Forward + inner loop + the combined outer loss (not yet backpropagated)."""
    y0, z0 = encode(net, x, lam, amp)
    if cfg.inner_steps == 0:  # baseline fine-tuning: the plain training loss
        fwd = rd_terms(net, x, y0, z0, lam, Rounding("noise"), amp)
        loss = fwd["loss_i"].mean()
        return {"loss": loss, "loss_ref": loss, "loss_fwd": loss, "ref": fwd}
    inner = inner_loop(net, x, y0, z0, lam, steps=cfg.inner_steps, lr=cfg.inner_lr, opt=cfg.inner_opt,
                       rounding=cfg.rounding, second_order=cfg.second_order,
                       keep_forward=cfg.forward_weight > 0, amp=amp)
    # the outer (query) loss: the refined latents under the training relaxation
    y, z = (inner["y"], inner["z"]) if cfg.outer_encoder else (y0.detach() + inner["dy"], z0.detach() + inner["dz"])
    ref = rd_terms(net, x, y, z, lam, Rounding("noise"), amp)
    loss_ref = ref["loss_i"].mean()
    fwd = inner["forward"]
    loss_fwd = fwd["loss_i"].mean() if fwd is not None else loss_ref.detach() * float("nan")
    w = cfg.forward_weight
    loss = (1 - w) * loss_ref + w * loss_fwd if w > 0 else loss_ref
    return {"loss": loss, "loss_ref": loss_ref, "loss_fwd": loss_fwd, "ref": ref}


def encode(net, x: torch.Tensor, lam: torch.Tensor, amp: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(y_g, z) float32, the transforms under bf16 autocast when ``amp``."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        y_g = net.g_a(x).float() * net.gain(lam)
        z = net.h_a(y_g).float()
    return y_g, z


def _hard_cost(net, x, y, z, lam) -> dict:
    """Float32 RD cost once hard-quantized, on the clamped output (as the decoder gives it)."""
    r = rd_terms(net, x, y, z, lam, hard_round, False)
    r["mse_i"] = (r["x_hat"].clamp(0, 1) - x).pow(2).mean((1, 2, 3))
    r["loss_i"] = r["bpp_i"] + lam * 255**2 * r["mse_i"]
    return r


def validate(net, val: torch.Tensor, cfg: MetaConfig, device, amp: bool) -> list[dict]:
    """Hard-quantized RD of the forward latents and after ``val_steps`` refinement steps.

    The refinement drop (``drop`` = forward − refined cost) is what meta
    fine-tuning should raise; ``loss_fwd`` is what it must not worsen.
    """
    rows = []
    torch.manual_seed(cfg.seed)
    for lmbda in (net.lmbda_min * 2, math.sqrt(net.lmbda_min * net.lmbda_max), net.lmbda_max / 2):
        tot = {"loss_fwd": 0.0, "loss_ref": 0.0, "bpp": 0.0, "psnr": 0.0}
        for i in range(0, len(val), 4):
            x = val[i:i + 4].to(device)
            lam = torch.full((x.shape[0],), lmbda, device=device)
            with torch.no_grad():
                y0, z0 = net.encode_latents(x, lam)
                start = _hard_cost(net, x, y0, z0, lam)
            inner = inner_loop(net, x, y0, z0, lam, steps=cfg.val_steps, lr=cfg.inner_lr, opt=cfg.inner_opt,
                               rounding=cfg.rounding, keep_forward=False, amp=amp)
            with torch.no_grad():
                end = _hard_cost(net, x, inner["y"], inner["z"], lam)
            tot["loss_fwd"] += start["loss_i"].sum().item()
            tot["loss_ref"] += end["loss_i"].sum().item()
            tot["bpp"] += end["bpp_i"].sum().item()
            tot["psnr"] += (10 * torch.log10(1 / end["mse_i"].clamp_min(1e-10))).sum().item()
        row = {k: v / len(val) for k, v in tot.items()}
        row.update(kind="val", lmbda=lmbda, loss=row["loss_ref"], drop=row["loss_fwd"] - row["loss_ref"])
        rows.append(row)
    return rows


# ----- the run ------------------------------------------------------------------------------------
def train_meta(cfg: MetaConfig, device: str | None = None, quiet: bool = False) -> Path:
    """Runs (or resumes) meta fine-tuning until ``cfg.steps``; returns the checkpoint path."""
    cfg.check()
    device, amp, out = prepare_run(cfg, device)
    ckpt_path, log_path = out / "last.pt", out / "log.csv"

    net, model_cfg = load_init(cfg.init, device)
    main_params = [p for n, p in net.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in net.named_parameters() if n.endswith(".quantiles")]
    opt, aux_opt = torch.optim.Adam(main_params, lr=cfg.lr), torch.optim.Adam(aux_params, lr=cfg.aux_lr)
    step, wall = 0, 0.0
    init_sha = sha256_file(Path(cfg.init))
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        if state.get("init_sha256") != init_sha:
            raise ValueError(f"{ckpt_path} was started from other weights than {cfg.init}; use a new --out")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        aux_opt.load_state_dict(state["aux_optimizer"])
        step, wall = state["step"], state["wall"]
    # export reads N/M/λ range and the data from the checkpoint's config
    run_cfg = cfg.to_dict() | model_cfg
    (out / "config.json").write_text(json.dumps(run_cfg, indent=2))
    if amp and device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)

    sampler = CropSampler(cfg.data, crop=cfg.crop)
    val = center_crops(cfg.val, cfg.val_size, cfg.val_images) if cfg.val and cfg.val_every else None
    new_log = not log_path.exists()
    if not new_log:
        truncate_log(log_path, step, LOG_FIELDS)
    log_file = open(log_path, "a", newline="")
    log = csv.DictWriter(log_file, LOG_FIELDS, extrasaction="ignore")
    if new_log:
        log.writeheader()

    stop = {"now": False}
    old_handler = signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))

    def checkpoint():
        save_atomic({"model": net.state_dict(), "optimizer": opt.state_dict(), "aux_optimizer": aux_opt.state_dict(),
                     "step": step, "wall": wall, "config": run_cfg, "amp": amp, "images": len(sampler),
                     "init": str(cfg.init), "init_sha256": init_sha}, ckpt_path)
        log_file.flush()

    if not quiet:
        print(f"meta fine-tuning on {device} (bf16 autocast: {amp}), {len(sampler)} images, from step {step}; "
              f"inner: {cfg.inner_steps} x {cfg.inner_opt} lr {cfg.inner_lr} ({cfg.rounding}), "
              f"{'second' if cfg.second_order else 'first'}-order", flush=True)
    if val is not None and step == 0:
        for row in validate(net, val, cfg, device, amp):
            log.writerow({"step": 0, "wall": 0.0, "lr": cfg.lr, **row})
    bar = tqdm(total=cfg.steps, initial=step, disable=quiet, dynamic_ncols=True, mininterval=5)
    net.train()
    t_last = time.perf_counter()
    while step < cfg.steps and not stop["now"]:
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        x = sampler.batch(cfg.seed, step, cfg.batch_size).to(device)
        lam = sample_lmbda(net.lmbda_min, net.lmbda_max, gen, x.shape[0]).to(device)
        if amp and device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        torch.manual_seed(cfg.seed * 1_000_003 + step)  # the relaxation noise
        lr = learning_rate(cfg, step)
        for g in opt.param_groups:
            g["lr"] = lr
        r = meta_step(net, x, lam, cfg, amp)
        opt.zero_grad(set_to_none=True)
        r["loss"].backward()
        if cfg.clip:
            torch.nn.utils.clip_grad_norm_(main_params, cfg.clip)
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
            mse = r["ref"]["mse_i"].mean().item()
            log.writerow({"step": step, "wall": round(wall, 1), "kind": "train", "lmbda": "",
                          "loss": r["loss"].item(), "loss_fwd": r["loss_fwd"].item(), "loss_ref": r["loss_ref"].item(),
                          "drop": r["loss_fwd"].item() - r["loss_ref"].item(), "bpp": r["ref"]["bpp_i"].mean().item(),
                          "psnr": 10 * math.log10(1 / max(mse, 1e-10)), "aux": aux.item(), "lr": lr})
            bar.set_postfix(loss=f"{r['loss'].item():.3f}", drop=f"{r['loss_fwd'].item() - r['loss_ref'].item():.4f}",
                            s_step=f"{wall / max(step, 1):.2f}")
        if val is not None and (step % cfg.val_every == 0 or step == cfg.steps):
            net.eval()
            for row in validate(net, val, cfg, device, amp):
                log.writerow({"step": step, "wall": round(wall, 1), "lr": lr, **row})
            net.train()
        if step % cfg.ckpt_every == 0:
            checkpoint()
    checkpoint()
    bar.close()
    log_file.close()
    signal.signal(signal.SIGTERM, old_handler)
    if not quiet:
        print(f"stopped at step {step} after {wall:.0f} s ({wall / max(step, 1):.2f} s/step)", flush=True)
    return ckpt_path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="JSON file with MetaConfig fields; flags override it")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.add_argument("--quiet", action="store_true")
    for f in dataclasses.fields(MetaConfig):
        flag = f"--{f.name.replace('_', '-')}"
        if f.name == "data":
            p.add_argument(flag, nargs="+", help="training image folders")
        elif f.type in (bool, "bool"):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        else:
            typ = f.type if isinstance(f.type, type) else {"int": int, "float": float, "str": str}.get(str(f.type), str)
            p.add_argument(flag, dest=f.name, type=typ)


def run(args: argparse.Namespace) -> int:
    names = [f.name for f in dataclasses.fields(MetaConfig)]
    cfg = MetaConfig.load(args.config, {k: getattr(args, k) for k in names if hasattr(args, k)})
    train_meta(cfg, device=args.device, quiet=args.quiet)
    return 0
