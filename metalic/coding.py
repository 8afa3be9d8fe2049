"""``metalic encode`` and ``metalic decode``: the codec in process, no Redis."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from codec.errors import MetalicError


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    if name == "encode":
        _encode_arguments(p)
    else:
        p.add_argument("input")
        p.add_argument("-o", "--output", required=True)
        p.add_argument("--device")
        p.add_argument("--json", action="store_true")


def run(name: str, args) -> int:
    return {"encode": cmd_encode, "decode": cmd_decode}[name](args)


def _encode_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="PNG, JPEG, WebP, BMP or TIFF")
    p.add_argument("-o", "--output", required=True, help="output container path")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--bpp", type=float, dest="target_bpp", help="target bits per pixel (real file size)")
    target.add_argument("--lmbda", type=float, help="rate parameter λ (0.0001 to 1)")
    target.add_argument("--psnr", type=float, dest="target_psnr", help="smallest file reaching this PSNR (dB)")
    p.add_argument("--preset", choices=["fast", "balanced", "max"], default="balanced")
    p.add_argument("--model", default=None, help="registry name (default metalic-vr)")
    p.add_argument("--weights", help="local weights file or folder overriding the shipped ones")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    for stage in ("refine", "adapt-lambda", "bias-search", "rate-control"):
        p.add_argument(f"--{stage}", dest=stage.replace("-", "_"), action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--refine-steps", type=int)
    p.add_argument("--lambda-steps", type=int)
    p.add_argument("--rounding", choices=["sga", "noise", "ste"])
    p.add_argument("--json", action="store_true", help="print one JSON object with the result")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_encode(args) -> int:
    from codec.constants import DEFAULT_MODEL
    from codec.options import validate_options
    from codec.pipeline import Encoder

    keys = ("target_bpp", "lmbda", "target_psnr", "preset", "refine", "adapt_lambda", "bias_search",
            "rate_control", "refine_steps", "lambda_steps", "rounding", "model")
    from codec.image import probe_image

    opts = validate_options({k: getattr(args, k) for k in keys})
    data = read_file(args.image)
    probe_image(data)  # the whole image policy: a bad image fails before the model loads
    t0 = time.perf_counter()
    enc = Encoder(args.model or DEFAULT_MODEL, device=args.device, weights=args.weights)
    bar = None
    if not args.quiet and not args.json:
        from tqdm import tqdm

        bar = tqdm(total=1, file=sys.stderr, dynamic_ncols=True, bar_format="{desc} {bar} {postfix}")

    def progress(p):
        if bar is not None:
            bar.total, bar.n = max(p.get("steps") or 1, 1), min(p.get("step") or 0, p.get("steps") or 1)
            bar.set_description(p["stage"])
            bar.set_postfix_str(f"{p.get('bpp') or 0:.4f} bpp {p.get('psnr') or 0:.2f} dB")

    res = enc.encode(data, opts, progress)
    if bar is not None:
        bar.close()
    Path(args.output).write_bytes(res.bitstream)
    meta = dict(res.metadata, seconds_total=round(time.perf_counter() - t0, 4), output=args.output)
    if math.isnan(meta["ms_ssim"]):
        meta["ms_ssim"] = None  # undefined below 161 px a side; JSON has no NaN (the API writes null too)
    if args.json:
        print(json.dumps(meta | {"seconds": meta["seconds"]["total"], "stage_seconds": meta["seconds"]},
                         allow_nan=False))
    else:
        ssim = "n/a" if meta["ms_ssim"] is None else f"{meta['ms_ssim']:.4f}"
        print(f"{args.output}: {meta['bytes']} bytes, {meta['bpp']:.4f} bpp, {meta['psnr']:.2f} dB PSNR, "
              f"{ssim} MS-SSIM, {meta['seconds']['total']:.2f} s")
        for w in meta["warnings"]:
            print(f"note: {w}", file=sys.stderr)
    return 0


def cmd_decode(args) -> int:
    from codec.pipeline import decode

    res = decode(read_file(args.input), device=args.device or "cpu")
    try:
        res.image.save(args.output, format="PNG")
    except (OSError, ValueError) as e:
        raise MetalicError(f"cannot write {args.output}: {e}") from None
    if args.json:
        print(json.dumps(res.metadata))
    else:
        print(f"{args.output}: {res.image.size[0]}x{res.image.size[1]} {res.image.mode}")
    return 0


def read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise MetalicError(f"cannot read {path}: {e.strerror}") from None
