"""Training configuration: one dataclass, read from JSON and overridden by flags."""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainConfig:
    """Settings of ``metalic train base``. Every field is a CLI flag of the same name."""

    data: list[str] = field(default_factory=lambda: [
        "../shared/datasets/train/bsds500/train", "../shared/datasets/train/imagenet_sample",
        "../shared/datasets/train/t91", "../shared/datasets/train/mcmaster"])
    val: str = "../shared/datasets/train/bsds500/val"
    out: str = "runs/base"
    init: str = ""  # weights file to start from (a new run only; a checkpoint in out wins)
    resume: str = ""  # a published checkpoint folder (training.checkpoint) that seeds out when out has none
    N: int = 64
    M: int = 128
    lmbda_min: float = 2.5e-4
    lmbda_max: float = 0.25
    steps: int = 30000
    batch_size: int = 16
    crop: int = 128
    lr: float = 2e-4
    lr_final: float = 2e-5
    decay_from: float = 0.85  # the decay starts at this fraction of decay_until
    decay_until: int = 0  # the step the decay reaches lr_final, which then holds; 0: at `steps`
    warmup: int = 0  # steps of linear learning-rate warm-up
    quant: str = "noise"  # what the synthesis sees in training: "noise" or "ste" (rounded)
    until: int = 0  # stop (checkpointed) at this step without changing the schedule; 0: at `steps`
    aux_lr: float = 1e-3
    clip: float = 1.0
    seed: int = 0
    amp: str = "auto"
    threads: int = 0
    ckpt_every: int = 250
    snapshot_every: int = 2500
    val_every: int = 1000
    val_images: int = 24
    val_size: int = 256
    log_every: int = 25

    @classmethod
    def load(cls, path: str | Path | None, overrides: dict) -> "TrainConfig":
        values = json.loads(Path(path).read_text()) if path else {}
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
