"""``metalic bench``: RD, speed, adaptation and meta benchmarks."""

from __future__ import annotations

import argparse

from bench import adapt_bench, encode_ab, meta_bench, rd


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    bsub = p.add_subparsers(dest="bench_cmd", required=True)
    rd.add_bench_subparsers(bsub)
    adapt_bench.add_adapt_subparser(bsub)
    meta_bench.add_meta_subparser(bsub)
    encode_ab.add_encode_ab_subparser(bsub)


def run(name: str, args) -> int:
    return args.func(args)
