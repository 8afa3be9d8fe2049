"""``metalic info``: a container's header fields and sizes, without loading torch."""

from __future__ import annotations

import argparse
import json

from codec import bitstream
from metalic.coding import read_file


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("input")


def run(name: str, args) -> int:
    print(json.dumps(bitstream.describe(bitstream.unpack(read_file(args.input))), indent=2))
    return 0
