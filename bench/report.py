"""Turn measured RD points into averages, BD-rates, JSON, a Markdown table and a plot.

Input is the list of per-image records that :mod:`bench.rd` produces::

    {"image": str, "width": int, "height": int,
     "points": {codec: [{"label", "param", "bytes", "bpp", "psnr", "ms_ssim",
                         "encode_s", "decode_s", ...}, ...]}}

Every image has the same rate points per codec (the same λ list, quality list
or bpp targets), so the average curve of a codec is the mean, point by point,
of bpp, PSNR, MS-SSIM and times over the images, as CompressAI's ``eval``
reports it. BD metrics are computed on those average curves (the headline
number) and also per image (their mean is reported alongside).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .bdrate import bd_psnr, bd_rate
from codec.metrics import ms_ssim_db

__all__ = ["METALIC_CURVE", "average_curves", "bd_against_anchors", "write_json", "write_table", "plot_rd"]

METALIC_CURVE = "metalic"
"""Name under which metalic's points are stored; BD-rates are of it against each anchor."""

_AVERAGED = ("bpp", "psnr", "ms_ssim", "encode_s", "decode_s")


def _mean(values: Sequence[float]) -> float | None:
    """Mean of the finite values; None when there are none (e.g. MS-SSIM on tiny images)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def average_curves(records: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Average each codec's RD points over images, point by point.

    Returns:
        dict. Codec -> list of ``{"label", "bpp", "psnr", "ms_ssim", "encode_s",
        "decode_s", "num_images"}``, in rate-point order.
    """
    codecs: dict[str, list[list[Mapping[str, Any]]]] = {}
    for record in records:
        for codec, points in record["points"].items():
            columns = codecs.setdefault(codec, [[] for _ in points])
            if len(columns) != len(points):
                raise ValueError(f"{codec}: image {record['image']} has {len(points)} points, others {len(columns)}")
            for column, point in zip(columns, points):
                column.append(point)
    curves = {}
    for codec, columns in codecs.items():
        curve = []
        for column in columns:
            entry: dict[str, Any] = {"label": column[0]["label"]}
            entry.update({key: _mean([p[key] for p in column]) for key in _AVERAGED})
            entry["num_images"] = len(column)
            curve.append(entry)
        curves[codec] = curve
    return curves


def _bd_points(curve: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[float]]:
    """Rate and PSNR lists for BD, without repeated points.

    Repeats happen when several bpp targets clamp to the same end of a
    codec's range; they carry no information and the interpolant rejects them.
    """
    rates, psnrs = [], []
    for p in sorted(curve, key=lambda p: p["bpp"]):
        if p["bpp"] is None or p["psnr"] is None:
            continue
        if rates and (p["bpp"] == rates[-1] or p["psnr"] in psnrs):
            continue
        rates.append(p["bpp"])
        psnrs.append(p["psnr"])
    return rates, psnrs


def bd_against_anchors(curves: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """BD-rate (%) and BD-PSNR (dB) of :data:`METALIC_CURVE` against every other codec.

    Returns:
        dict. Anchor -> ``{"bd_rate": float|None, "bd_psnr": float|None,
        "error": str|None}``; a curve pair that cannot be compared (no
        overlap, too few points) gets None values and the reason, not an
        exception, so one bad anchor never loses a long benchmark run.
    """
    if METALIC_CURVE not in curves:
        return {}
    rate_t, psnr_t = _bd_points(curves[METALIC_CURVE])
    results = {}
    for anchor, curve in curves.items():
        if anchor == METALIC_CURVE:
            continue
        rate_a, psnr_a = _bd_points(curve)
        try:
            results[anchor] = {
                "bd_rate": bd_rate(rate_a, psnr_a, rate_t, psnr_t),
                "bd_psnr": bd_psnr(rate_a, psnr_a, rate_t, psnr_t),
                "error": None,
            }
        except ValueError as exc:
            results[anchor] = {"bd_rate": None, "bd_psnr": None, "error": str(exc)}
    return results


def _jsonable(value: Any) -> Any:
    """Plain JSON types; NaN and infinities become null (strict JSON has neither)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(obj: Any, path: Path) -> None:
    """Write ``obj`` as strict, indented JSON (NaN written as null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, spec)


def bd_percent(value: float | None) -> str:
    """A BD-rate for a table; None where the curves share no rate or PSNR range."""
    return "no overlap" if value is None else f"{value:+.1f}"


def write_table(summary: Mapping[str, Any], path: Path) -> None:
    """Write the summary as Markdown: BD table, average RD curves, timings."""
    lines = [f"# RD benchmark ({summary['num_images']} images)", ""]
    bd = summary.get("bd", {})
    if bd:
        lines += [f"## BD of {METALIC_CURVE} against each anchor (average curves)", ""]
        lines.append("| anchor | BD-rate (%) | BD-PSNR (dB) | mean per-image BD-rate (%) | note |")
        lines.append("|---|---:|---:|---:|---|")
        for anchor, row in bd.items():
            per_image = summary.get("bd_per_image_mean", {}).get(anchor)
            lines.append(
                f"| {anchor} | {_fmt(row['bd_rate'], '+.2f')} | {_fmt(row['bd_psnr'], '+.3f')} "
                f"| {_fmt(per_image, '+.2f')} | {row['error'] or ''} |"
            )
        lines += ["", "Negative BD-rate: metalic needs fewer bits for the same PSNR.", ""]
    lines += ["## Average RD curves", ""]
    for codec, curve in summary["curves"].items():
        lines += [f"### {codec}", "", "| point | bpp | PSNR (dB) | MS-SSIM | encode (s) | decode (s) |"]
        lines.append("|---|---:|---:|---:|---:|---:|")
        for p in curve:
            lines.append(
                f"| {p['label']} | {_fmt(p['bpp'], '.4f')} | {_fmt(p['psnr'], '.3f')} | {_fmt(p['ms_ssim'], '.5f')} "
                f"| {_fmt(p['encode_s'], '.4f')} | {_fmt(p['decode_s'], '.4f')} |"
            )
        lines.append("")
    timing = summary.get("timing")
    if timing:
        lines += [f"## Timing (median of {timing['runs']} runs, side by side)", ""]
        lines += [f"Machine: {timing['machine']['description']}", ""]
        if METALIC_CURVE in timing["median"]:
            lines += [f"Each anchor is set to {METALIC_CURVE}'s rate on every image, so both code the same bits.", ""]
        else:
            lines += [f"No {METALIC_CURVE} in this run: anchors timed at a fixed rate, ratios n/a.", ""]
        lines += ["| codec | bpp | encode (s) | decode (s) | metalic ÷ codec, encode | metalic ÷ codec, decode |"]
        lines.append("|---|---:|---:|---:|---:|---:|")
        for codec, row in timing["median"].items():
            lines.append(
                f"| {codec} | {_fmt(row.get('bpp'), '.4f')} "
                f"| {_fmt(row['encode_s'], '.4f')} | {_fmt(row['decode_s'], '.4f')} "
                f"| {_fmt(row.get('encode_ratio'), '.3f')} | {_fmt(row.get('decode_ratio'), '.3f')} |"
            )
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")


def plot_rd(curves: Mapping[str, Sequence[Mapping[str, Any]]], path: Path, title: str = "") -> None:
    """Plot PSNR and MS-SSIM (dB) against bpp for every codec into a PNG.

    Uses the object-oriented Agg canvas, not pyplot: no global backend switch,
    no GUI, safe in a worker or a test.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax_psnr, ax_ssim = fig.subplots(1, 2)
    for codec, curve in curves.items():
        pts = sorted((p for p in curve if p["bpp"] is not None), key=lambda p: p["bpp"])
        style = {"marker": "o", "linewidth": 2.0 if codec.startswith(METALIC_CURVE) else 1.2, "label": codec}
        ax_psnr.plot([p["bpp"] for p in pts], [p["psnr"] for p in pts], **style)
        ssim = [(p["bpp"], ms_ssim_db(p["ms_ssim"])) for p in pts if p["ms_ssim"] is not None]
        if ssim:
            ax_ssim.plot(*zip(*ssim), **style)
    ax_psnr.set(xlabel="bits per pixel", ylabel="PSNR RGB (dB)", title="PSNR")
    ax_ssim.set(xlabel="bits per pixel", ylabel="-10 log10(1 - MS-SSIM) (dB)", title="MS-SSIM")
    if not ax_ssim.lines:
        ax_ssim.text(0.5, 0.5, "MS-SSIM undefined\n(images under 161 px)", ha="center", va="center",
                     transform=ax_ssim.transAxes)
    for ax in (ax_psnr, ax_ssim):
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
