"""``metalic bench``: RD, speed, adaptation, meta and channel-gating benchmarks."""

from __future__ import annotations

import argparse

from bench import adapt_bench, ecg, encode_ab, meta_bench, rd


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    bsub = p.add_subparsers(dest="bench_cmd", required=True)
    rd.add_bench_subparsers(bsub)
    # the service figures need uvicorn and a worker, which only this layer may start
    bsub.choices["speed"].set_defaults(service_fn=_measure_service)
    adapt_bench.add_adapt_subparser(bsub)
    meta_bench.add_meta_subparser(bsub)
    ecg.add_ecg_subparser(bsub)
    encode_ab.add_encode_ab_subparser(bsub)


def _measure_service(*args, **kwargs):
    from metalic.speed_service import measure_service

    return measure_service(*args, **kwargs)


def run(name: str, args) -> int:
    return args.func(args)
