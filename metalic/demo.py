"""``metalic demo``: metalic next to JPEG, WebP and AVIF at the same bytes, in the terminal.

For each target bpp it encodes the image with metalic (in process, no Redis),
decodes the file and checks it equals what the encoder measured, then codes the
same image with each classical codec Pillow has at the highest quality whose
file is at most the metalic file's size (:mod:`codec.baselines`, as the page's
compare view does). It prints one table row per codec, measured on the written
files, names the best PSNR at that budget, and writes into ``--out``::

    {stem}_original.png             the image as the encoder sees it (the PSNR reference)
    {stem}_{t}bpp.mlic              the metalic file
    {stem}_{t}bpp.jpg .webp .avif   the baseline files
    {stem}_{t}bpp_{codec}.png       each file decoded (codec = metalic, jpeg, webp, avif)
    {stem}_{t}bpp_crops.png         the same centre crop of each, side by side

where ``stem`` is ``sample`` for the generated picture or the name of ``--image``.
"""

from __future__ import annotations

import argparse
import io
import math
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from codec.errors import MetalicError

DEFAULT_TARGETS = (0.25, 0.5, 1.0)
"""bpp. The rates the demo codes at unless ``--bpp`` names others."""

SAMPLE_SIZE = (384, 256)
"""Pixels (width, height) of the generated sample: large enough for MS-SSIM, small enough for a fresh CPU."""


class Row(NamedTuple):
    """One codec's file at one target, as the table prints it."""

    codec: str
    setting: str
    bytes: int
    bpp: float
    psnr: float
    ms_ssim: float  # nan where the image is too small for MS-SSIM
    fits: bool  # False: even the codec's lowest quality is over the metalic file's size


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="metalic-demo", help="folder for the files (created; default %(default)s)")
    p.add_argument("--image", help="your own image (PNG, JPEG, WebP, BMP or TIFF) instead of the generated sample")
    p.add_argument("--bpp", type=float, nargs="+", default=list(DEFAULT_TARGETS), metavar="BPP",
                   help=f"target bits per pixel, one or more (default: {' '.join(f'{t:g}' for t in DEFAULT_TARGETS)})")
    p.add_argument("--preset", default="fast", choices=["fast", "balanced", "max"])
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")


def sample_image() -> np.ndarray:
    """A generated HxWx3 uint8 picture: smooth waves, a ramp and mild noise, the same on every machine."""
    width, height = SAMPLE_SIZE
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([128 + 100 * np.sin(xx / 23) * np.cos(yy / 31), 128 + 90 * np.cos((xx + yy) / 17),
                    (xx * 255 / width + 40 * np.sin(yy / 9)) % 256], -1)
    rng = np.random.default_rng(0)
    return np.clip(rgb + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.uint8)


def _targets(values: list[float], preset: str) -> list[float]:
    from codec.options import validate_options

    targets = list(dict.fromkeys(values))  # once each, in the order given
    for t in targets:
        validate_options({"target_bpp": t, "preset": preset})  # OptionsError before the model loads
    return targets


def _fmt_ms_ssim(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


HEADER = f"{'target':>6}  {'codec':<8} {'setting':<15} {'bytes':>7} {'bpp':>7} {'PSNR dB':>8} {'MS-SSIM':>8}"


def format_row(target: float | None, row: Row) -> str:
    first = f"{target:>6g}" if target is not None else " " * 6
    line = (f"{first}  {row.codec:<8} {row.setting:<15} {row.bytes:>7} {row.bpp:>7.4f} {row.psnr:>8.2f} "
            f"{_fmt_ms_ssim(row.ms_ssim):>8}")
    return line if row.fits else line + "  over budget (lowest quality)"


def verdict(rows: list[Row]) -> str:
    """Which file has the best PSNR at this budget, and by how much; ``rows[0]`` is metalic's."""
    fitting = [r for r in rows if r.fits]
    ranked = sorted(fitting, key=lambda r: r.psnr, reverse=True)
    best = ranked[0]
    if best.codec == rows[0].codec:
        if len(ranked) == 1:
            return f"best PSNR at <= {rows[0].bytes} bytes: {best.codec} (no baseline fits)"
        return (f"best PSNR at <= {rows[0].bytes} bytes: {best.codec}, "
                f"{best.psnr - ranked[1].psnr:.2f} dB above {ranked[1].codec}")
    return (f"best PSNR at <= {rows[0].bytes} bytes: {best.codec}; "
            f"metalic is {best.psnr - rows[0].psnr:.2f} dB below it")


def _load_input(image: str | None):
    """(file bytes, file-name stem, image as the encoder sees it, description) of ``--image`` or the sample."""
    from PIL import Image

    from codec.image import load_image
    from metalic.coding import read_file

    if image:
        data, stem = read_file(image), Path(image).stem
    else:
        buffer = io.BytesIO()
        Image.fromarray(sample_image(), "RGB").save(buffer, format="PNG")
        data, stem = buffer.getvalue(), "sample"
    img = load_image(data)  # the image policy; an ImageError exits 2 before the model loads
    source = f"{image} ({img.width}x{img.height})" if image else f"a generated {img.width}x{img.height} sample"
    return data, stem, img, source


def compare_at(enc, data: bytes, img, target: float, preset: str, prefix: Path) -> list[Row] | None:
    """Codes the image at one target with metalic and each baseline, writes the files, returns the rows.

    Returns None when the decoded metalic file differs from what the encoder
    measured (the encoder checks this too; the demo shows it on the file it wrote).
    """
    from PIL import Image

    from codec import baselines
    from codec.metrics import bpp, ms_ssim
    from codec.pipeline import decode
    from metalic.crop_sheet import Tile, crop_box, render

    def path(suffix: str) -> Path:
        return prefix.with_name(f"{prefix.name}_{target:g}bpp{suffix}")

    res = enc.encode(data, {"target_bpp": target, "preset": preset})
    path(".mlic").write_bytes(res.bitstream)
    t = time.perf_counter()
    dec = decode(res.bitstream)
    decode_s = time.perf_counter() - t
    if not np.array_equal(dec.rgb, res.reconstruction):
        print(f"{target:>6g}  metalic: the decoded file differs from the encoder's reconstruction")
        return None
    dec.image.save(path("_metalic.png"))
    meta = res.metadata
    rows = [Row("metalic", f"lmbda={meta['lmbda']:.3g}", meta["bytes"], meta["bpp"], meta["psnr"], meta["ms_ssim"],
                True)]
    box = crop_box(img.height, img.width)
    tiles = [Tile(img.rgb, "original", f"{img.width}x{img.height}, crop at {box.left},{box.top}"),
             Tile(dec.rgb, "metalic", f"{meta['bytes']} B  {meta['psnr']:.2f} dB")]
    for b in baselines.compare(img.rgb, meta["bytes"]):
        path(baselines.CODECS[b.codec].extension).write_bytes(b.data)
        Image.fromarray(b.rgb, "RGB").save(path(f"_{b.codec}.png"))
        rows.append(Row(b.codec, f"q={b.quality}", len(b.data), bpp(len(b.data), img.width, img.height), b.psnr,
                        ms_ssim(img.rgb, b.rgb), b.fits))
        tiles.append(Tile(b.rgb, f"{b.codec} q={b.quality}", f"{len(b.data)} B  {b.psnr:.2f} dB"))
    for i, row in enumerate(rows):
        print(format_row(target if i == 0 else None, row))
    print(f"{'':6}  {verdict(rows)}")
    print(f"{'':6}  metalic encode {meta['seconds']['total']:.2f} s, decode {decode_s:.2f} s; "
          "the decoded file equals the encoder's reconstruction")
    title = (f"target {target:g} bpp: {box.side}x{box.side} centre crop of {prefix.name}, x{box.zoom}; "
             f"every file at most {meta['bytes']} bytes")
    render(tiles, title).save(path("_crops.png"))
    return rows


def run(name: str, args) -> int:
    from PIL import Image

    from codec import baselines
    from codec.pipeline import Encoder

    t_start = time.perf_counter()
    targets = _targets(args.bpp, args.preset)
    data, stem, img, source = _load_input(args.image)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MetalicError(f"cannot create {out}: {e.strerror}") from None
    Image.fromarray(img.rgb, "RGB").save(out / f"{stem}_original.png")
    enc = Encoder(device=args.device)
    print(f"model {enc.loaded.name} (weights {enc.loaded.weights_hash.hex()}, trained: {enc.loaded.trained}) "
          f"on {enc.device}, preset {args.preset}; image: {source}")
    missing = [c for c in baselines.CODECS if c not in baselines.available()]
    if missing:
        print(f"this Pillow cannot write {', '.join(missing)}; those rows are left out")
    print("every baseline is the highest quality whose file is not larger than the metalic file")
    print()
    print(HEADER)
    for target in targets:
        if compare_at(enc, data, img, target, args.preset, out / stem) is None:
            return 1
    print()
    print(f"files in {out}/ ({stem}_*), {time.perf_counter() - t_start:.1f} s in all")
    return 0
