"""The ``metalic`` command: encode, decode, info, demo, train, bench, serve, worker.

Exit codes: 0 ok, 2 bad input (one-line reason on stderr), 1 anything else.

Each subcommand lives in its own module, imported only when that subcommand
runs, so ``metalic --help`` and ``metalic info`` answer without loading torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from typing import NamedTuple


class Command(NamedTuple):
    module: str
    help: str
    own_parser: bool = False
    """True when the module's ``main(argv)`` parses its own flags (``serve``, ``worker``)."""


COMMANDS: dict[str, Command] = {
    "encode": Command("metalic.coding", "encode an image to a .mlic container (in process, no Redis)"),
    "decode": Command("metalic.coding", "decode a .mlic container to PNG"),
    "info": Command("metalic.info", "print a container's header fields and sizes"),
    "demo": Command("metalic.demo", "metalic next to JPEG, WebP and AVIF at the same bytes, on a sample or your image"),
    "train": Command("metalic.train_cli", "train models and export weights"),
    "bench": Command("metalic.bench_cli", "benchmarks (RD, speed, adaptation)"),
    "serve": Command("metalic.serve", "run the API (and, without REDIS_URL, a local Redis and one worker)", True),
    "worker": Command("worker.main", "run an RQ encode worker", True),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: subcommand names and one-line help, nothing imported."""
    parser = argparse.ArgumentParser(prog="metalic", description="metalic learned image compression")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for name, command in COMMANDS.items():
        sub.add_parser(name, help=command.help, add_help=False)
    return parser


def command_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    """The parser of one subcommand, built by its module; returns (parser, module)."""
    module = importlib.import_module(COMMANDS[name].module)
    parser = argparse.ArgumentParser(prog=f"metalic {name}", description=COMMANDS[name].help)
    module.add_arguments(name, parser)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    # compressai calls torch.jit.script at import; torch 2.14 warns on every start
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated", category=FutureWarning)
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        build_parser().parse_args(argv)  # prints the usage or the error and exits
        return 2
    name, rest = argv[0], argv[1:]
    if COMMANDS[name].own_parser:
        return importlib.import_module(COMMANDS[name].module).main(rest) or 0

    parser, module = command_parser(name)
    args = parser.parse_args(rest)
    from codec.errors import MetalicError

    try:
        return module.run(name, args)
    except MetalicError as e:
        print(f"metalic: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
