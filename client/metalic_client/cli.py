"""``metalic-client``: encode and decode through a metalic service from the shell.

::

    metalic-client encode photo.png --bpp 0.25 -o photo.mlic
    metalic-client decode photo.mlic -o photo.png
    metalic-client status JOB_ID | cancel JOB_ID

The URL and key come from ``--url``/``--api-key`` or ``$METALIC_URL``/``$METALIC_API_KEY``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from metalic_client._client import Client
from metalic_client._exceptions import MetalicClientError
from metalic_client.types import Job


class ProgressBar:
    """A one-line text progress bar on stderr (no dependency)."""

    def __init__(self, stream=sys.stderr, width: int = 30, enabled: bool = True):
        self.stream = stream
        self.width = width
        self.enabled = enabled

    def __call__(self, job: Job) -> None:
        if not self.enabled:
            return
        p = job.progress
        fraction = (p.step / p.steps) if p and p.step is not None and p.steps else 0.0
        filled = int(self.width * min(max(fraction, 0.0), 1.0))
        stage = (p.stage if p and p.stage else job.status.value)[:10]
        extra = ""
        if p and p.bpp is not None:
            extra += f" {p.bpp:.3f} bpp"
        if p and p.psnr is not None:
            extra += f" {p.psnr:.2f} dB"
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {stage:<10}{extra:<24}")
        self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


STAGE_SWITCHES = ("refine", "adapt_lambda", "bias_search", "rate_control")
STAGE_OPTIONS = (*STAGE_SWITCHES, "refine_steps", "lambda_steps", "rounding", "model")
"""The encode options besides the target and preset (the server's schema; tests hold them equal)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metalic-client", description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="service URL (default: $METALIC_URL or http://127.0.0.1:8000)")
    parser.add_argument("--api-key", help="API key (default: $METALIC_API_KEY)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP request")
    sub = parser.add_subparsers(dest="command", required=True)

    enc = sub.add_parser("encode", help="encode an image into a .mlic bitstream")
    enc.add_argument("image", type=Path)
    target = enc.add_mutually_exclusive_group()
    target.add_argument("--bpp", type=float, help="target bits per pixel")
    target.add_argument("--lmbda", type=float, help="rate-distortion lambda")
    target.add_argument("--psnr", type=float, help="target PSNR in dB")
    enc.add_argument("--preset", choices=["fast", "balanced", "max"], default="balanced")
    for stage in STAGE_SWITCHES:
        enc.add_argument(f"--{stage.replace('_', '-')}", dest=stage, action=argparse.BooleanOptionalAction, default=None)
    enc.add_argument("--refine-steps", type=int)
    enc.add_argument("--lambda-steps", type=int)
    enc.add_argument("--rounding", choices=["sga", "noise", "ste"])
    enc.add_argument("--model", help="model name on the server (default: its default model)")
    enc.add_argument("-o", "--output", type=Path, help="output file (default: IMAGE with .mlic)")
    enc.add_argument("--no-wait", action="store_true", help="print the job and return at once")
    enc.add_argument("--quiet", action="store_true", help="no progress bar")

    dec = sub.add_parser("decode", help="decode a .mlic bitstream to PNG on the server")
    dec.add_argument("bitstream", type=Path)
    dec.add_argument("-o", "--output", type=Path, help="output PNG (default: BITSTREAM with .png)")

    for name, text in (("status", "show a job"), ("cancel", "cancel a job")):
        p = sub.add_parser(name, help=text)
        p.add_argument("job_id")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with Client(args.url, args.api_key, timeout=args.timeout) as client:
            if args.command == "encode":
                bar = ProgressBar(enabled=not args.quiet and not args.no_wait)
                stages = {k: getattr(args, k) for k in STAGE_OPTIONS if getattr(args, k) is not None}
                try:
                    job = client.encode(args.image, target_bpp=args.bpp, lmbda=args.lmbda, target_psnr=args.psnr,
                                        preset=args.preset, wait=not args.no_wait, on_progress=bar, **stages)
                finally:
                    bar.done()
                if args.no_wait:
                    print(job.model_dump_json(indent=2))
                    return 0
                output = args.output or args.image.with_suffix(".mlic")
                client.download_bitstream(job, output)
                meta = job.result.metadata if job.result else {}
                print(f"{output}: {job.result.bytes if job.result else '?'} bytes, "
                      f"{meta.get('bpp', float('nan')):.4f} bpp, {meta.get('psnr', float('nan')):.2f} dB PSNR")
            elif args.command == "decode":
                output = args.output or args.bitstream.with_suffix(".png")
                client.decode(args.bitstream, output)
                print(output)
            elif args.command == "status":
                print(client.get_job(args.job_id).model_dump_json(indent=2))
            elif args.command == "cancel":
                print(json.dumps({"id": args.job_id, "status": client.cancel(args.job_id).status.value}))
    except MetalicClientError as exc:
        print(f"metalic-client: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"metalic-client: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
