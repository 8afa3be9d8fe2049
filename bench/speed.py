"""Side-by-side encode and decode timing of metalic and the anchors (AVIF first).

Absolute times depend on the machine and on whatever else it runs, so
DESIGN.md section 4 asks for ratios measured side by side in one run, with the
machine named. For each image:

1. metalic encodes at one λ (one untimed warm-up run, then ``runs`` timed
   runs); the size of its stream sets the target rate;
2. each anchor is set, by :func:`bench.anchors.search_param`, to the
   parameter that lands closest to that rate, so both sides code the same
   number of bits; it is warmed up and timed the same way;
3. the median of the timed runs is kept, and ratios are formed per image.

Over images, the report gives the median of the per-image medians and the
median of the per-image ratios (robust to one slow outlier run).

.. note::
   Threads are not pinned: torch uses ``torch.get_num_threads()`` threads and
   libavif uses Pillow's default (all cores). Both are recorded in
   :func:`machine_info` so a reader can judge the comparison.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import PIL
from PIL import features

from . import anchors
from codec.metrics import bpp
from .report import METALIC_CURVE
from .runners import MetalicRunner

__all__ = ["machine_info", "median_time", "time_image", "summarize_timing"]


def machine_info() -> dict[str, Any]:
    """Name the machine the timings come from (CPU model, cores, threads, versions)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass  # not Linux: platform.processor() is the best we have
    import torch

    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pillow": PIL.__version__,
        "libavif": features.version("avif") if features.check("avif") else None,
    }
    info["description"] = f"{cpu}, {info['cores']} cores, torch {info['torch_threads']} threads, {info['platform']}"
    return info


def median_time(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    """Median wall time of ``runs`` calls of ``fn`` after one untimed warm-up call.

    The warm-up absorbs one-off costs (lazy imports, allocator growth, torch
    kernel selection) that a service pays once per process, not per image.

    Returns:
        tuple ``(seconds, result of the warm-up call)``.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    result = fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def time_image(
    img: np.ndarray,
    metalic: MetalicRunner | None,
    lmbda: float,
    codecs: Sequence[str] = ("avif",),
    runs: int = 5,
    target_bpp: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Median encode and decode times for metalic and each anchor on one image.

    Args:
        img: np.ndarray. HxWx3 uint8 RGB.
        metalic: MetalicRunner or None. None times the anchors alone, at ``target_bpp``.
        lmbda: float. metalic's rate parameter.
        codecs: sequence of str. Anchors to time next to metalic.
        runs: int. Timed runs per measurement (plus one warm-up).
        target_bpp: float or None. Rate for the anchors; None uses metalic's.

    Returns:
        dict. Codec -> ``{"param", "bpp", "encode_s", "decode_s"}``; anchors
        also get ``encode_ratio`` and ``decode_ratio`` = metalic time / anchor
        time (above 1: metalic is slower) when metalic was timed.
    """
    height, width = img.shape[:2]
    out: dict[str, dict[str, Any]] = {}
    if metalic is not None:
        enc_s, data = median_time(lambda: metalic.encode(img, lmbda), runs)
        dec_s, _ = median_time(lambda: metalic.decode(data), runs)
        rate = bpp(len(data), width, height)
        out[METALIC_CURVE] = {"param": lmbda, "bpp": rate, "encode_s": enc_s, "decode_s": dec_s}
        target_bpp = rate if target_bpp is None else target_bpp
    if target_bpp is None:
        raise ValueError("target_bpp is required when metalic is not timed")
    for codec in codecs:
        param, data = anchors.search_param(codec, img, target_bpp)
        enc_s, _ = median_time(lambda: anchors.encode(codec, img, param), runs)
        dec_s, _ = median_time(lambda: anchors.decode(data), runs)
        row = {"param": param, "bpp": bpp(len(data), width, height), "encode_s": enc_s, "decode_s": dec_s}
        if METALIC_CURVE in out:
            row["encode_ratio"] = out[METALIC_CURVE]["encode_s"] / enc_s
            row["decode_ratio"] = out[METALIC_CURVE]["decode_s"] / dec_s
        out[codec] = row
    return out


def summarize_timing(per_image: Sequence[Mapping[str, Mapping[str, Any]]], runs: int) -> dict[str, Any]:
    """Median over images of per-image medians and ratios, with the machine named."""
    median: dict[str, dict[str, Any]] = {}
    codecs = list(dict.fromkeys(codec for row in per_image for codec in row))
    for codec in codecs:
        rows = [row[codec] for row in per_image if codec in row]
        median[codec] = {
            key: statistics.median(r[key] for r in rows)
            for key in ("bpp", "encode_s", "decode_s", "encode_ratio", "decode_ratio")
            if all(key in r for r in rows)
        }
    return {"runs": runs, "machine": machine_info(), "median": median}


# ----- metalic bench speed: presets, decode stages, the floor, anchors -----------------------------------

PNG_LEVELS = (1, 3)
"""zlib levels of the decoded PNG timed side by side (the decode endpoint writes level 1)."""


def _median_stages(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return {k: statistics.median(r[k] for r in rows if k in r) for k in keys}


def time_decode(data: bytes, runs: int = 5) -> dict[str, Any]:
    """Median seconds of each decode stage (:mod:`codec.timing`), of the whole decode and of PNG writing.

    ``total`` is :func:`codec.pipeline.decode` end to end; ``png_level_N`` is
    writing its image as PNG at zlib level N (not part of ``total``).
    """
    import io

    from codec.pipeline import decode
    from codec.timing import recording

    decode(data)  # warm-up: model load, allocator, kernel selection
    rows = []
    for _ in range(runs):
        with recording() as seconds:
            t = time.perf_counter()
            result = decode(data)
            seconds["total"] = time.perf_counter() - t
        for level in PNG_LEVELS:
            buffer = io.BytesIO()
            t = time.perf_counter()
            result.image.save(buffer, format="PNG", compress_level=level)
            seconds[f"png_level_{level}"] = time.perf_counter() - t
            seconds[f"png_level_{level}_bytes"] = len(buffer.getvalue())
        rows.append(seconds)
    return _median_stages(rows)


def time_presets(encoder, png: bytes, presets: Sequence[str], target_bpp: float, runs: int) -> dict[str, Any]:
    """Per preset: medians of the encoder's own stage seconds over ``runs`` encodes, and the stream.

    The stage seconds are those :class:`codec.pipeline.Encoder` reports in
    ``metadata["seconds"]`` (what a worker's job record shows).
    """
    out = {}
    for preset in presets:
        rows, result = [], None
        for _ in range(runs):
            result = encoder.encode(png, {"target_bpp": target_bpp, "preset": preset})
            rows.append(result.metadata["seconds"])
        out[preset] = {"seconds": _median_stages(rows), "bpp": result.metadata["bpp"],
                       "psnr": result.metadata["psnr"], "bitstream": result.bitstream}
    return out


def synthesis_flops(height: int = 512, width: int = 768, model: str | None = None) -> dict[str, Any]:
    """Multiply-add FLOPs (2 per MAC) of the hyper-synthesis and synthesis of one decode, counted by hooks.

    Every convolution, transposed convolution and GDN (a 1x1 convolution over
    channels) of ``h_s`` and the ``g_s`` blocks is hooked while one real
    decode-sized pass runs. Also returns each layer with its input shape, for
    :func:`conv_throughput`.
    """
    import torch
    from compressai.layers import GDN
    from torch import nn

    from codec.constants import DEFAULT_MODEL
    from codec.weights import load_model

    net = load_model(model or DEFAULT_MODEL).backend.net
    layers: list[dict[str, Any]] = []

    def hook(part):
        def count(module, inputs, output):
            x = inputs[0]
            if isinstance(module, nn.ConvTranspose2d):
                cin, cout = module.in_channels, module.out_channels
                macs = cin * cout // module.groups * module.kernel_size[0] * module.kernel_size[1] * x.shape[-2] * x.shape[-1]
            elif isinstance(module, nn.Conv2d):
                macs = (module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
                        * module.out_channels * output.shape[-2] * output.shape[-1])
            else:  # GDN: a C x C 1x1 convolution of x²
                macs = x.shape[1] ** 2 * x.shape[-2] * x.shape[-1]
            layers.append({"part": part, "module": module, "shape": tuple(x.shape), "flops": 2 * macs})
        return count

    handles = []
    for part, root in (("hyper_synthesis", net.h_s), ("synthesis", nn.ModuleList([net.g_s_convs, net.g_s_igdn]))):
        for m in root.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, GDN)):
                handles.append(m.register_forward_hook(hook(part)))
    try:
        with torch.inference_mode():
            z = torch.zeros(1, net.N, -(-height // 64), -(-width // 64))
            net.h_s(z)
            y = torch.zeros(1, net.M, -(-height // 64) * 4, -(-width // 64) * 4)
            net.synthesize(y, torch.tensor([0.01]))
    finally:
        for h in handles:
            h.remove()
    totals = {part: sum(layer["flops"] for layer in layers if layer["part"] == part)
              for part in ("hyper_synthesis", "synthesis")}
    return {"height": height, "width": width, "flops": totals, "total_flops": sum(totals.values()), "layers": layers}


def conv_throughput(layers: Sequence[Mapping[str, Any]], runs: int = 5, threads: int | None = None) -> dict[str, Any]:
    """This machine's achieved FLOP/s on exactly the counted layers, each run alone on a tensor of its shape.

    Median of ``runs`` timings per layer (after a warm-up) with ``threads``
    intra-op threads (None: torch's current count), in the faster of the two
    memory layouts (torch's default and channels_last, which the decoder runs
    and oneDNN's transposed convolutions prefer), so the floor is the
    arithmetic at this machine's best rate, not at a slow layout's; the
    layers' times add up to the floor.
    """
    import copy

    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        seconds = 0.0
        with torch.inference_mode():
            for layer in layers:
                x = torch.rand(layer["shape"])
                module_cl = copy.deepcopy(layer["module"]).to(memory_format=torch.channels_last)
                x_cl = x.contiguous(memory_format=torch.channels_last)
                seconds += min(median_time(lambda: layer["module"](x), runs)[0],
                               median_time(lambda: module_cl(x_cl), runs)[0])
        flops = sum(layer["flops"] for layer in layers)
        return {"threads": torch.get_num_threads(), "seconds": seconds, "flops_per_s": flops / seconds}
    finally:
        torch.set_num_threads(previous)


def decode_floor(runs: int = 5, height: int = 512, width: int = 768) -> dict[str, Any]:
    """The decode floor of a ``width`` x ``height`` image: its (hyper-)synthesis FLOPs at the measured throughput.

    Measured with one thread (what the exact decoder runs, see
    :mod:`codec.determinism`) and with every core.
    """
    counted = synthesis_flops(height, width)
    out = {"height": height, "width": width, "flops": counted["flops"], "total_flops": counted["total_flops"]}
    for name, threads in (("one_thread", 1), ("all_threads", os.cpu_count() or 1)):
        tp = conv_throughput(counted["layers"], runs, threads)
        out[name] = {"threads": tp["threads"], "gflops_per_s": tp["flops_per_s"] / 1e9,
                     "floor_s": counted["total_flops"] / tp["flops_per_s"]}
    return out


def time_anchors(img: np.ndarray, target_bpp: float, codecs: Sequence[str], runs: int) -> dict[str, Any]:
    """Pillow's encode and decode of each anchor at the rate closest to ``target_bpp`` (median of ``runs``)."""
    return time_image(img, None, 0.0, codecs, runs, target_bpp)


def run_speed(images: Sequence[tuple[str, np.ndarray]], presets: Sequence[str] = ("fast", "balanced", "max"),
              codecs: Sequence[str] = ("jpeg", "webp", "avif"), runs: int = 5, target_bpp: float = 0.5,
              weights: str | None = None, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The codec side of ``metalic bench speed``: per image, every preset, the decode stages, the anchors.

    The decode stages are timed on the first preset's stream; the anchors are
    set to that stream's rate. Medians over images of the per-image medians
    go in ``median``; the floor is measured once.
    """
    import io

    from PIL import Image

    from codec.pipeline import Encoder

    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if not presets:
        raise ValueError("at least one preset")
    encoder = Encoder(device="cpu", weights=weights)
    per_image, streams = {}, {}
    for name, img in images:
        buffer = io.BytesIO()
        Image.fromarray(img, "RGB").save(buffer, format="PNG")
        coded = time_presets(encoder, buffer.getvalue(), presets, target_bpp, runs)
        stream = coded[presets[0]].pop("bitstream")
        for row in coded.values():
            row.pop("bitstream", None)
        streams[name] = stream
        row = {"shape": list(img.shape[:2]), "presets": coded, "decode": time_decode(stream, runs),
               "anchors": time_anchors(img, len(stream) * 8 / (img.shape[0] * img.shape[1]), codecs, runs)}
        per_image[name] = row
        log(f"{name}: decode {row['decode']['total']:.4f} s")
    rows = list(per_image.values())
    median = {
        "presets": {p: _median_stages([r["presets"][p]["seconds"] for r in rows]) for p in presets},
        "decode": _median_stages([r["decode"] for r in rows]),
        "anchors": {c: _median_stages([{k: v for k, v in r["anchors"][c].items() if isinstance(v, float)}
                                       for r in rows]) for c in codecs},
    }
    floor = decode_floor(runs)
    kodak = [r["decode"]["total"] for r in rows if sorted(r["shape"]) == [floor["height"], floor["width"]]]
    floor["decode_s"] = statistics.median(kodak) if kodak else None
    if kodak:
        for name in ("one_thread", "all_threads"):
            floor[name]["decode_over_floor"] = floor["decode_s"] / floor[name]["floor_s"]
    return {"runs": runs, "target_bpp": target_bpp, "presets": list(presets), "codecs": list(codecs),
            "machine": machine_info(), "median": median, "floor": floor, "per_image": per_image,
            "streams": streams}


def speed_table(summary: Mapping[str, Any]) -> str:
    """The report as a plain-text table (seconds, medians)."""
    med = summary["median"]
    lines = [f"machine: {summary['machine']['description']}", "",
             "encode, per preset (median s):"]
    for preset, stages in med["presets"].items():
        lines.append(f"  {preset:<9} " + "  ".join(f"{k} {v:.3f}" for k, v in stages.items()))
    lines += ["", "decode stages (median s, first preset's stream):",
              "  " + "  ".join(f"{k} {v:.4f}" for k, v in med["decode"].items() if not k.endswith("_bytes"))]
    lines += ["", "Pillow anchors at the same rate (median s):"]
    for codec, row in med["anchors"].items():
        lines.append(f"  {codec:<9} encode {row.get('encode_s', float('nan')):.4f}  "
                     f"decode {row.get('decode_s', float('nan')):.4f}  bpp {row.get('bpp', float('nan')):.3f}")
    fl = summary["floor"]
    lines += ["", f"floor ({fl['width']}x{fl['height']}): {fl['total_flops'] / 1e9:.2f} GFLOP "
                  f"(synthesis {fl['flops']['synthesis'] / 1e9:.2f}, hyper-synthesis "
                  f"{fl['flops']['hyper_synthesis'] / 1e9:.3f})"]
    for name in ("one_thread", "all_threads"):
        row = fl[name]
        reached = (f"; decode {fl['decode_s']:.4f} s = {row['decode_over_floor']:.2f}x the floor"
                   if fl.get("decode_s") else "")
        lines.append(f"  {row['threads']} thread(s): {row['gflops_per_s']:.1f} GFLOP/s, floor {row['floor_s']:.4f} s"
                     + reached)
    service = summary.get("service")
    if service:
        lines += ["", f"POST /decode: {service['decode_rps']:.2f} requests/s ({service['clients']} clients, "
                      f"{service['decodes']} decodes in {service['seconds']:.1f} s, uvicorn)",
                  f"worker: {service['jobs_per_hour']:.0f} jobs/hour ({service['job_note']})"]
    return "\n".join(lines)
