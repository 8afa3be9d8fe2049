"""Rate-distortion benchmark of metalic against the Pillow anchors, and its CLI.

For every image and every rate point, each codec encodes to real bytes and
decodes back; bpp, PSNR, MS-SSIM and encode/decode seconds are recorded
(:func:`bench.runners.measure`). Rate points are:

* metalic: a list of λ values (:data:`DEFAULT_LAMBDAS`, log-spaced);
* anchors: their quality sweeps (:attr:`AnchorCodec.sweep`), or, with
  ``targets``, the parameter whose file lands closest to each target bpp.

Outputs in ``out_dir``::

    per_image/<name>.json   every point of every codec, plus per-image BD metrics
    summary.json            average RD curves, BD-rate/BD-PSNR vs each anchor, timing
    table.md                the same as Markdown tables
    rd.png                  PSNR and MS-SSIM against bpp

Typical workflow (``metalic bench rd``, or the module directly)::

    python -m bench.rd --data ../shared/datasets/kodak --out results/kodak
    python -m bench.rd --data DIR --out OUT --no-metalic --codecs jpeg,avif   # anchors only

From Python, pass any :class:`~bench.runners.MetalicRunner`::

    summary = run_rd(load_images(data_dir), out_dir, metalic=runner, config=RDConfig())
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import PIL
from PIL import Image, ImageOps

from . import anchors, report, speed
from .runners import MetalicRunner, measure, metalic_runner

__all__ = [
    "DEFAULT_LAMBDAS",
    "IMAGE_SUFFIXES",
    "RDConfig",
    "load_images",
    "run_rd",
    "add_bench_subparsers",
    "main_rd",
    "main_speed",
]

DEFAULT_LAMBDAS: tuple[float, ...] = tuple(float(f"{v:.3g}") for v in np.geomspace(9e-4, 0.36, 8))
"""Dimensionless. metalic's default rate points: 8 log-spaced λ over the shipped model's rate
index (λ_min / 2 to 2·λ_max of its λ 0.0018-0.18 training range), so none is clamped."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""File suffixes (case-insensitive) that :func:`load_images` picks up."""


@dataclass
class RDConfig:
    """What an RD run measures.

    Attributes:
        lambdas: tuple of float. metalic's rate points.
        codecs: tuple of str. Anchors to run; unavailable ones are skipped
            with a note in the summary.
        targets: tuple of float or None. None: anchors use their quality
            sweeps. Otherwise: one point per target bpp, found by bisection.
        timing_runs: int. 0: no side-by-side timing. N: median of N runs per image.
        timing_codecs: tuple of str. Anchors timed next to metalic.
        timing_lambda: float or None. λ for the timing; None takes the middle
            of ``lambdas``.
        skipped: dict. Filled by :meth:`resolve`: anchor -> why it was dropped.
    """

    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS
    codecs: tuple[str, ...] = tuple(anchors.ANCHORS)
    targets: tuple[float, ...] | None = None
    timing_runs: int = 0
    timing_codecs: tuple[str, ...] = ("avif",)
    timing_lambda: float | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    def resolve(self) -> RDConfig:
        """Drop unavailable or unknown anchors (remembering why) and validate the rest."""
        unknown = [c for c in (*self.codecs, *self.timing_codecs) if c not in anchors.ANCHORS]
        if unknown:
            raise ValueError(f"unknown anchor codec(s) {unknown}; known: {', '.join(anchors.ANCHORS)}")
        if not self.lambdas or any(not (lm > 0) for lm in self.lambdas):
            raise ValueError(f"lambdas must be a non-empty list of positive numbers, got {self.lambdas}")
        if self.targets is not None and (not self.targets or any(not (t > 0) for t in self.targets)):
            raise ValueError(f"targets must be a non-empty list of positive bpp values, got {self.targets}")
        if self.timing_runs < 0:
            raise ValueError(f"timing_runs must be >= 0, got {self.timing_runs}")
        missing = anchors.unavailable_codecs()
        return RDConfig(
            lambdas=tuple(self.lambdas),
            codecs=tuple(c for c in self.codecs if c not in missing),
            targets=None if self.targets is None else tuple(self.targets),
            timing_runs=self.timing_runs,
            timing_codecs=tuple(c for c in self.timing_codecs if c not in missing),
            timing_lambda=self.timing_lambda,
            skipped={c: missing[c] for c in dict.fromkeys((*self.codecs, *self.timing_codecs)) if c in missing},
        )


def load_images(data_dir: Path | str, limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    """Read the PNG and JPEG files of a folder as ``(name, HxWx3 uint8)``, sorted by name.

    EXIF orientation is applied and every image is converted to 8-bit RGB
    (alpha dropped, grayscale expanded), the benchmark's only input format.
    ``name`` is the file stem; two files with the same stem are an error,
    since their per-image reports would overwrite each other.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"not a folder: {data_dir}")
    paths = sorted(p for p in data_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if limit is not None:
        paths = paths[:limit]
    if not paths:
        raise ValueError(f"no {'/'.join(IMAGE_SUFFIXES)} images in {data_dir}")
    images, seen = [], set()
    for path in paths:
        if path.stem in seen:
            raise ValueError(f"two images named {path.stem!r} in {data_dir}")
        seen.add(path.stem)
        with Image.open(path) as im:
            images.append((path.stem, np.array(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.uint8)))
    return images


class AnchorCache:
    """Anchor points measured once and reused by later runs on the same images.

    An anchor's file, and so its rate and distortion, depend only on the image,
    the codec, its parameter and the Pillow build, so a run that measures many
    metalic checkpoints against the same anchors (``bench.training_progress``)
    encodes and scores each anchor point once. A reused point keeps the
    seconds measured when it was made and says ``"cached": true``.

    Args:
        path: path. A JSON file; created by the first :meth:`save` that has new points.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._points: dict[str, list[dict[str, Any]]] = (
            json.loads(self.path.read_text()) if self.path.exists() else {})
        self._dirty = False

    @staticmethod
    def key(codec: str, img: np.ndarray, targets: Sequence[float] | None) -> str:
        pixels = hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()[:32]
        return f"{codec}|{img.shape}|{pixels}|{targets}|Pillow {PIL.__version__}"

    def get(self, key: str) -> list[dict[str, Any]] | None:
        points = self._points.get(key)
        return None if points is None else [{**point, "cached": True} for point in points]

    def put(self, key: str, points: list[dict[str, Any]]) -> None:
        self._points[key] = points
        self._dirty = True

    def save(self) -> None:
        # Only new points are written, through a file of this process's own: runs that
        # share a complete cache (two presets side by side) never write it at all.
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self._points))
        tmp.replace(self.path)
        self._dirty = False


def _anchor_points(codec: str, img: np.ndarray, targets: Sequence[float] | None,
                   cache: AnchorCache | None = None) -> list[dict[str, Any]]:
    if cache is not None:
        key = AnchorCache.key(codec, img, targets)
        if (points := cache.get(key)) is not None:
            return points
    spec = anchors.ANCHORS[codec]
    points = []
    if targets is None:
        settings = [(p, p, None) for p in spec.sweep]
    else:
        # The search's own encodes are not timed; measure() re-encodes once.
        settings = [(t, anchors.search_param(codec, img, t)[0], t) for t in targets]
    for label, param, target in settings:
        point = {"label": label, "param_name": spec.param_name, "param": param}
        if target is not None:
            point["target_bpp"] = target
        point.update(measure(img, lambda: anchors.encode(codec, img, param), anchors.decode))
        points.append(point)
    if cache is not None:
        cache.put(key, points)
    return points


def _metalic_points(metalic: MetalicRunner, img: np.ndarray, lambdas: Sequence[float]) -> list[dict[str, Any]]:
    points = []
    for lmbda in lambdas:
        point = {"label": lmbda, "param_name": "lmbda", "param": lmbda}
        point.update(measure(img, lambda: metalic.encode(img, lmbda), metalic.decode))
        points.append(point)
    return points


def _per_image_bd_mean(records: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Mean over images of the per-image BD-rates (images where it was computable)."""
    values: dict[str, list[float]] = {}
    for record in records:
        for anchor, row in record.get("bd", {}).items():
            values.setdefault(anchor, [])
            if row["bd_rate"] is not None:
                values[anchor].append(row["bd_rate"])
    return {anchor: (float(np.mean(v)) if v else None) for anchor, v in values.items()}


def run_rd(
    images: Sequence[tuple[str, np.ndarray]],
    out_dir: Path | str,
    metalic: MetalicRunner | None = None,
    config: RDConfig | None = None,
    log: Callable[[str], None] = lambda msg: None,
    anchor_cache: AnchorCache | None = None,
) -> dict[str, Any]:
    """Run the RD benchmark and write every output file.

    Args:
        images: sequence of ``(name, HxWx3 uint8)``, e.g. from :func:`load_images`.
        out_dir: path. Created if missing; files in it are overwritten.
        metalic: MetalicRunner or None. None runs the anchors only (no BD).
        config: RDConfig or None. None uses the defaults.
        log: callable. Receives one progress line per image and codec.
        anchor_cache: AnchorCache or None. Anchor points to reuse, and where
            the ones measured here are kept for the next run.

    Returns:
        dict. The content of ``summary.json``.
    """
    config = (config or RDConfig()).resolve()
    if not images:
        raise ValueError("no images to benchmark")
    out_dir = Path(out_dir)
    for codec, reason in config.skipped.items():
        log(f"skipping {codec}: {reason}")
    records, timings = [], []
    for name, img in images:
        img = anchors.check_image(img)
        record: dict[str, Any] = {"image": name, "width": int(img.shape[1]), "height": int(img.shape[0]), "points": {}}
        if metalic is not None:
            record["points"][report.METALIC_CURVE] = _metalic_points(metalic, img, config.lambdas)
            log(f"{name}: {report.METALIC_CURVE} done")
        for codec in config.codecs:
            record["points"][codec] = _anchor_points(codec, img, config.targets, anchor_cache)
            log(f"{name}: {codec} done")
        if anchor_cache is not None:
            anchor_cache.save()
        record["bd"] = report.bd_against_anchors(record["points"])
        if config.timing_runs > 0 and (metalic is not None or config.timing_codecs):
            lmbda = config.timing_lambda
            if lmbda is None:
                lmbda = config.lambdas[len(config.lambdas) // 2]
            # Without metalic there is no rate to match; time the anchors at 0.5 bpp.
            record["timing"] = speed.time_image(
                img, metalic, lmbda, config.timing_codecs, config.timing_runs, None if metalic else 0.5
            )
            timings.append(record["timing"])
            log(f"{name}: timing done")
        report.write_json(record, out_dir / "per_image" / f"{name}.json")
        records.append(record)

    curves = report.average_curves(records)
    summary: dict[str, Any] = {
        "num_images": len(records),
        "images": [r["image"] for r in records],
        "config": asdict(config),
        "curves": curves,
        "bd": report.bd_against_anchors(curves),
        "bd_per_image_mean": _per_image_bd_mean(records) if metalic is not None else {},
    }
    if timings:
        summary["timing"] = speed.summarize_timing(timings, config.timing_runs)
    report.write_json(summary, out_dir / "summary.json")
    report.write_table(summary, out_dir / "table.md")
    report.plot_rd(curves, out_dir / "rd.png", title=f"RD on {len(records)} images")
    return summary


# --------------------------------------------------------------------------- CLI


def parse_floats(text: str) -> tuple[float, ...]:
    """argparse type: comma-separated numbers."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip().lower() for v in text.split(",") if v.strip())


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="folder of .png/.jpg images")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--limit", type=int, default=None, help="first N images only (sorted by name)")
    parser.add_argument("--weights", default=None, help="metalic weights file (default: the shipped model)")
    parser.add_argument("--preset", default="fast", help="metalic encoder preset (default: fast)")
    parser.add_argument("--no-metalic", action="store_true", help="run the anchors only")
    parser.add_argument("--timing-runs", type=int, default=5, help="timed runs per measurement (0: no timing)")
    parser.add_argument("--timing-codecs", type=_names, default=("avif",), help="anchors timed next to metalic")


def _configure_rd(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = "Rate-distortion benchmark of metalic against JPEG, WebP, JPEG 2000 and AVIF."
    _add_common(parser)
    parser.add_argument("--lambdas", type=parse_floats, default=DEFAULT_LAMBDAS, help="metalic λ values, comma-separated")
    parser.add_argument(
        "--targets", type=parse_floats, default=None, help="anchor target bpps, comma-separated (default: quality sweeps)"
    )
    parser.add_argument("--codecs", type=_names, default=tuple(anchors.ANCHORS), help="anchors, comma-separated")
    parser.add_argument("--timing-lambda", type=float, default=None, help="λ for timing (default: middle λ)")
    parser.add_argument("--anchor-cache", type=Path, default=None,
                        help="JSON file of anchor points to reuse and extend (same images, same Pillow)")
    parser.set_defaults(func=_cmd_rd)
    return parser


def _configure_speed(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = ("Speed on Kodak: encode stages per preset, decode stages, the decode floor, Pillow's "
                          "JPEG/WebP/AVIF side by side, POST /decode requests/s and worker jobs/hour "
                          "(median of N runs).")
    parser.add_argument("--data", type=Path, required=True, help="folder of .png/.jpg images (Kodak)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created): speed.json, speed.txt")
    parser.add_argument("--limit", type=int, default=None, help="first N images only (sorted by name)")
    parser.add_argument("--weights", default=None, help="metalic weights file (default: the shipped model)")
    parser.add_argument("--presets", type=_names, default=("fast", "balanced", "max"),
                        help="encoder presets, comma-separated (the first one's stream is decoded)")
    parser.add_argument("--timing-runs", type=int, default=5, help="timed runs per measurement (median)")
    parser.add_argument("--timing-codecs", type=_names, default=("jpeg", "webp", "avif"), help="Pillow anchors")
    parser.add_argument("--bpp", type=float, default=0.5, help="target rate of the encodes (default 0.5)")
    parser.add_argument("--no-service", action="store_true", help="skip the uvicorn and worker measurements")
    parser.add_argument("--service-seconds", type=float, default=20.0, help="closed-loop POST /decode seconds")
    parser.add_argument("--clients", type=int, default=2, help="concurrent POST /decode clients")
    parser.add_argument("--jobs", type=int, default=5, help="real worker jobs timed for jobs/hour")
    parser.set_defaults(func=_cmd_speed, service_fn=None)
    return parser


def _runner(args: argparse.Namespace) -> MetalicRunner | None:
    if args.no_metalic:
        return None
    try:
        return metalic_runner(weights=args.weights, preset=args.preset)
    except ImportError as exc:
        raise SystemExit(f"cannot load metalic ({exc}); run with --no-metalic for the anchors alone") from exc


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _cmd_rd(args: argparse.Namespace) -> int:
    config = RDConfig(
        lambdas=args.lambdas,
        codecs=args.codecs,
        targets=args.targets,
        timing_runs=args.timing_runs,
        timing_codecs=args.timing_codecs,
        timing_lambda=args.timing_lambda,
    )
    cache = AnchorCache(args.anchor_cache) if args.anchor_cache else None
    summary = run_rd(load_images(args.data, args.limit), args.out, _runner(args), config, log=_log, anchor_cache=cache)
    for anchor, row in summary["bd"].items():
        print(f"BD-rate metalic vs {anchor}: " + (f"{row['bd_rate']:+.2f} %" if row["error"] is None else row["error"]))
    print(f"wrote {args.out / 'summary.json'}, table.md, rd.png, per_image/")
    return 0


def _cmd_speed(args: argparse.Namespace) -> int:
    if not args.no_service and args.service_fn is None:
        raise ValueError("the service measurements need the metalic CLI (metalic bench speed); or --no-service")
    images = load_images(args.data, args.limit)
    summary = speed.run_speed(images, args.presets, args.timing_codecs, args.timing_runs, args.bpp, args.weights,
                              log=_log)
    streams = summary.pop("streams")
    if not args.no_service:
        summary["service"] = args.service_fn([img for _, img in images], list(streams.values()),
                                             seconds=args.service_seconds, clients=args.clients, jobs=args.jobs,
                                             preset=args.presets[0])
    table = speed.speed_table(summary)
    report.write_json(summary, args.out / "speed.json")
    (args.out / "speed.txt").write_text(table + "\n", encoding="utf-8")
    print(table)
    print(f"wrote {args.out / 'speed.json'} and speed.txt")
    return 0


def add_bench_subparsers(subparsers: argparse._SubParsersAction) -> None:
    """Register ``rd`` and ``speed`` under a ``bench`` command of the main CLI.

    Each sets ``func``: the caller runs ``return args.func(args)`` (an int exit code).
    """
    _configure_rd(subparsers.add_parser("rd", help="RD curves, BD-rates, table and plot"))
    _configure_speed(subparsers.add_parser("speed", help="encode/decode speed, the floor, the service"))


def run_standalone(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parses argv and runs ``args.func``; a ValueError is exit 2 with one line (the metalic CLI contract)."""
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:
        # Same contract as the metalic CLI: bad input is exit 2 with one line.
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2


def main_rd(argv: Sequence[str] | None = None) -> int:
    """``metalic bench rd`` as a standalone entry point (``python -m bench.rd``).

    Returns:
        int. Exit code: 0 ok, 2 bad input (reason on stderr).
    """
    return run_standalone(_configure_rd(argparse.ArgumentParser(prog="python -m bench.rd")), argv)


def main_speed(argv: Sequence[str] | None = None) -> int:
    """``metalic bench speed`` as a standalone entry point; exit codes as :func:`main_rd`."""
    return run_standalone(_configure_speed(argparse.ArgumentParser(prog="metalic bench speed")), argv)


if __name__ == "__main__":
    sys.exit(main_rd())
