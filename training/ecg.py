"""``metalic train ecg``: fine-tune the gated default model (energy-based channel gating, M3).

Yin et al., "Universal Efficient Variable-rate Neural Image Compression"
(ICASSP 2022): the loss is the base training's plus the sparsity term,

    R + λ·255²·D + γ·Σ_n (α_n − α_t)²

where α_n is gate n's threshold level (:class:`codec.layers.EnergyGate`) and
α_t the target: the larger α, the sparser the convolution inputs. The run
starts from a dense model's weights file (the shipped default) with every gate
at α = ALPHA_START (nothing but all-zero channels gated), so the term pulls
the gates shut gradually while the networks adapt to what is left. The gate
parameters have their own learning rate (``gate_lr``, on the same schedule):
at the networks' fine-tuning rate α would need 10⁵ steps to move.

It runs in the base training's loop (:class:`training.base.Recipe`): seeded
batches, checkpoints in ``out/last.pt`` and exact resume are the same.
Validation adds the counted FLOPs of a forward pass (gated vs dense, all four
transforms and the synthesis alone) to each λ row.

Typical workflow::

    metalic train ecg --config configs/ecg.json
    metalic train export runs/ecg/last.pt --name metalic-vr-ecg --architecture metalic-vr-ecg --not-default
    metalic bench ecg --data ../shared/datasets/kodak
"""

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from codec.models.gated import GatedVariableRateHyperprior, transform_flops
from codec.models.variable_rate import VariableRateHyperprior
from codec.weights import sha256_file
from .base import LOG_FIELDS, Recipe, add_arguments as add_base_arguments, train
from .config import TrainConfig

MODEL_KEYS = ("N", "M", "lmbda_min", "lmbda_max")


@dataclass
class EcgConfig(TrainConfig):
    """Settings of ``metalic train ecg``: :class:`TrainConfig` plus the gates'.

    N, M and the λ range are the ``init`` file's, whatever the config says.
    ``gamma`` weighs the sparsity term (in the loss's units, bits per pixel);
    ``alpha_target`` is α_t in log(energy / layer mean energy): 0 gates every
    channel below the layer's mean energy.
    """

    init: str = "codec/weights/metalic-vr.pt"
    out: str = "runs/ecg"
    steps: int = 4000
    batch_size: int = 8
    lr: float = 2e-5
    lr_final: float = 5e-6
    decay_from: float = 0.5
    quant: str = "ste"
    ckpt_every: int = 50
    snapshot_every: int = 1000
    val_every: int = 250
    val_images: int = 8
    log_every: int = 10
    gamma: float = 0.1
    alpha_target: float = -0.5
    gate_lr: float = 1e-2

    def check(self) -> None:
        if not self.init:
            raise ValueError("train ecg fine-tunes a model: give init (a weights file or checkpoint)")
        if not self.gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {self.gamma}")
        if not self.gate_lr > 0:
            raise ValueError(f"gate_lr must be positive, got {self.gate_lr}")


class EcgRecipe(Recipe):
    """The gated model, the gates' own parameter group and the sparsity term."""

    log_fields = LOG_FIELDS + ["sparsity_loss", "alpha", "density", "gflops", "flops_ratio", "flops_ratio_gs"]

    def __init__(self, init_sha256: str):
        self.init_sha256 = init_sha256
        self.densities: dict[str, torch.Tensor] = {}
        self._dense = None

    def build(self, cfg: EcgConfig) -> GatedVariableRateHyperprior:
        net = GatedVariableRateHyperprior(cfg.N, cfg.M, cfg.lmbda_min, cfg.lmbda_max)
        for name, gate in net.gates().items():
            # the share of each convolution's input channels the last batch computed
            gate.register_forward_hook(lambda m, i, out, name=name: self.densities.__setitem__(name, out.detach().mean()))
        return net

    def param_groups(self, net: GatedVariableRateHyperprior, cfg: EcgConfig) -> list[dict]:
        gate_ids = {id(p) for p in net.gate_parameters()}
        main = [p for n, p in net.named_parameters() if not n.endswith(".quantiles") and id(p) not in gate_ids]
        return [{"params": main}, {"params": net.gate_parameters(), "lr_scale": cfg.gate_lr / cfg.lr}]

    def extra_loss(self, net: GatedVariableRateHyperprior, cfg: EcgConfig) -> tuple[torch.Tensor, dict]:
        penalty = net.sparsity_loss(cfg.alpha_target)
        alphas = torch.stack([g.alpha.detach() for g in net.gates().values()])
        density = torch.stack(list(self.densities.values())).mean().item() if self.densities else float("nan")
        return cfg.gamma * penalty, {"sparsity_loss": penalty.item(), "alpha": alphas.mean().item(),
                                     "density": density}

    def checkpoint_fields(self, cfg: EcgConfig) -> dict:
        return {"recipe": "ecg", "init": cfg.init, "init_sha256": self.init_sha256}

    def check_resume(self, state: dict, cfg: EcgConfig, path: Path) -> None:
        super().check_resume(state, cfg, path)
        if state.get("init_sha256") != self.init_sha256:
            raise ValueError(f"{path} was started from other weights than {cfg.init}; use a new --out")

    def validate_extra(self, net, x: torch.Tensor, lmbda: float) -> dict:
        if self._dense is None:  # FLOPs depend on the shapes only: an untrained dense twin counts them
            self._dense = VariableRateHyperprior(**net.config()).eval().to(x.device)
        lam = torch.tensor([lmbda], device=x.device)
        gated, dense = transform_flops(net, x, lam), transform_flops(self._dense, x, lam)
        return {"gflops": sum(gated.values()) / 1e9, "flops_ratio": sum(dense.values()) / sum(gated.values()),
                "flops_ratio_gs": dense["g_s"] / gated["g_s"]}


def train_ecg(cfg: EcgConfig, device: str | None = None, quiet: bool = False) -> Path:
    """Runs (or resumes) the gated fine-tuning until ``cfg.steps``; returns the checkpoint path."""
    cfg.check()
    state = torch.load(cfg.init, map_location="cpu", weights_only=True)
    cfg = dataclasses.replace(cfg, **{k: state["config"][k] for k in MODEL_KEYS if k in state["config"]})
    return train(cfg, device, quiet, EcgRecipe(sha256_file(Path(cfg.init))))


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_base_arguments(p, EcgConfig)


def run(args: argparse.Namespace) -> int:
    names = [f.name for f in dataclasses.fields(EcgConfig)]
    cfg = EcgConfig.load(args.config, {k: getattr(args, k) for k in names if hasattr(args, k)})
    train_ecg(cfg, device=args.device, quiet=args.quiet)
    return 0

