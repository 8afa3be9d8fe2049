"""``metalic train``: base training, meta fine-tuning, bias bank, channel gating, export and plots."""

from __future__ import annotations

import argparse

from training import base, bias_bank, ecg, export, meta

_RUN = {"base": base.run, "export": export.run, "plot": export.run_plot, "meta": meta.run, "bias-bank": bias_bank.run,
        "ecg": ecg.run}


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    tsub = p.add_subparsers(dest="train_cmd", required=True)
    base.add_arguments(tsub.add_parser("base", help="train the variable-rate model"))
    export.add_arguments(tsub.add_parser("export", help="write shipped weights + manifest from a checkpoint"))
    export.add_plot_arguments(tsub.add_parser("plot", help="plot loss, rate and PSNR curves of a training log"))
    meta.add_arguments(tsub.add_parser("meta", help="MAML-style fine-tuning for latent refinement (L²C)"))
    bias_bank.add_arguments(tsub.add_parser("bias-bank", help="overfit decoder biases per patch, cluster into a bank"))
    ecg.add_arguments(tsub.add_parser("ecg", help="fine-tune the gated model (energy-based channel gating, M3)"))


def run(name: str, args) -> int:
    return _RUN[args.train_cmd](args)
