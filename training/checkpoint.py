"""Checkpoint files of a training run: atomic saves, and the compact copy a run is resumed from elsewhere.

``out/last.pt`` holds everything in float32, so a run killed and restarted on the same
machine continues exactly. A run carried to another machine (the committed
``checkpoints/<run>/``) stores the Adam moments in bf16: half the bytes, and on load
``Optimizer.load_state_dict`` casts them back to the parameters' float32. The model
itself stays float32, so only the moments lose precision, by about one part in 256.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import torch

from codec.weights import sha256_file

CARRIED = ("log.csv", "config.json")


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def compact_optimizer(state: dict) -> dict:
    """An optimizer ``state_dict`` with its floating-point moments in bf16 (``step`` untouched)."""
    per_param = {
        pid: {k: v.to(torch.bfloat16) if torch.is_tensor(v) and v.is_floating_point() and k != "step" else v
              for k, v in s.items()}
        for pid, s in state["state"].items()
    }
    return {**state, "state": per_param}


def publish(run: Path, dest: Path) -> Path:
    """Writes the compact copy of ``run/last.pt`` (and its log and config) into ``dest``."""
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    for key in ("optimizer", "aux_optimizer"):
        state[key] = compact_optimizer(state[key])
    dest.mkdir(parents=True, exist_ok=True)
    save_atomic(state, dest / "last.pt")
    for name in CARRIED:
        if (run / name).exists():
            shutil.copyfile(run / name, dest / name)
    (dest / "last.pt.sha256").write_text(f"{sha256_file(dest / 'last.pt')}  last.pt\n")
    return dest / "last.pt"


def seed_from(resume: Path, out: Path) -> bool:
    """Starts ``out`` from a published copy when ``out`` has no checkpoint of its own."""
    if (out / "last.pt").exists():
        return False
    if not (resume / "last.pt").exists():
        if (resume / "last.pt.sha256").exists():  # the record is tracked, the file lives in history
            raise FileNotFoundError(f"{resume / 'last.pt'} is missing (its sha256 is there): restore it with "
                                    f"git show <commit>:{resume / 'last.pt'} > {resume / 'last.pt'} "
                                    f"(README: Status), or drop `resume` to start a new run")
        return False
    expected = (resume / "last.pt.sha256").read_text().split()[0] if (resume / "last.pt.sha256").exists() else None
    if expected is not None and sha256_file(resume / "last.pt") != expected:
        raise ValueError(f"{resume / 'last.pt'} does not match its sha256 file")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("last.pt", *CARRIED):
        if (resume / name).exists():
            shutil.copyfile(resume / name, out / name)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.checkpoint",
                                description="write the compact, committable copy of a run's checkpoint")
    p.add_argument("run", type=Path, help="run folder holding last.pt (e.g. runs/base-v2)")
    p.add_argument("dest", type=Path, help="folder to write (e.g. checkpoints/base-v2)")
    args = p.parse_args(argv)
    path = publish(args.run, args.dest)
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB, step {torch.load(path, weights_only=True)['step']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
