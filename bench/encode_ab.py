"""Encoder A/B: one preset of two versions of ``codec``, the same images, timed alternately.

``metalic bench encode-ab`` answers "is this encoder faster at the same RD?"
with both versions measured in the same run: the old ``codec`` package is
taken from a git revision (``git archive``), the new one is this tree's, and
each runs in its own long-lived child process (so each imports its own code)
with the same thread count and the same weights. Every (image, λ) point is
encoded by both children one after the other, the order alternating from
point to point, so a load that drifts (another process on the cores) is
shared fairly. The figures:

* BD-rate of the new curve against the old one (:func:`bench.bdrate.bd_rate`,
  on the curves averaged over images and per image), from real file sizes
  and the decoder's PSNR;
* old/new time ratio, both wall clock and the child's CPU time
  (``time.process_time``; with one thread it is the work done, which a busy
  machine disturbs less than the wall clock);
* with ``--forward``, each curve's BD-rate against the ``fast`` forward pass.

Typical workflow::

    metalic bench encode-ab --data ../shared/datasets/kodak --limit 3 --lambdas 0.002,0.0067,0.02 \\
        --old 152ea8f --preset balanced --forward --out results/encode-ab
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import report
from .bdrate import bd_rate
from .rd import IMAGE_SUFFIXES, parse_floats, run_standalone

__all__ = ["DEFAULT_OLD", "add_encode_ab_subparser", "main", "run_encode_ab"]

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_OLD = "152ea8f"
"""Git revision. The encoder before the balanced speed-up (issue 15): the ``balanced`` docs/BENCHMARKS.md timed."""

_CHILD = r"""
import io, json, sys, time, warnings
warnings.filterwarnings("ignore")
import torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
import codec
from codec.pipeline import Encoder
enc = Encoder(weights=args["weights"], device="cpu")
print(json.dumps({"codec": codec.__file__, "weights": enc.loaded.weights_hash.hex()}), flush=True)
for line in sys.stdin:
    job = json.loads(line)
    data = open(job["path"], "rb").read()
    w0, c0 = time.perf_counter(), time.process_time()
    res = enc.encode(data, job["options"])
    m = res.metadata
    refine = m["stages"].get("refine", {})
    print(json.dumps({"bpp": m["bpp"], "psnr": m["psnr"], "bytes": m["bytes"],
                      "wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0,
                      "stage_s": m["seconds"], "refine_steps": refine.get("steps_run", refine.get("steps"))}),
          flush=True)
"""


class _Child:
    """One encoder version in its own process: a JSON line in, a JSON line out."""

    def __init__(self, pythonpath: Path, threads: int, weights: str | None):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pythonpath), os.environ.get("PYTHONPATH", "")]))
        arg = json.dumps({"threads": threads, "weights": weights})
        self.proc = subprocess.Popen([sys.executable, "-c", _CHILD, arg], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=str(pythonpath))
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"encoder child exited ({self.proc.wait()})")
        return json.loads(line)

    def encode(self, path: Path, options: dict) -> dict:
        self.proc.stdin.write(json.dumps({"path": str(path), "options": options}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def _old_tree(rev: str, dest: Path) -> Path:
    """``codec/`` at git revision ``rev``, extracted under ``dest``."""
    tar = dest / "codec.tar"
    with open(tar, "wb") as f:
        done = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "codec"], stdout=f, stderr=subprocess.PIPE)
    if done.returncode != 0:
        raise ValueError(f"cannot read codec/ at {rev!r}: {done.stderr.decode().strip()}")
    with tarfile.open(tar) as t:
        t.extractall(dest, filter="data")
    tar.unlink()
    return dest


def _bd(base: Sequence[dict], test: Sequence[dict]) -> float | None:
    try:
        return bd_rate([p["bpp"] for p in base], [p["psnr"] for p in base],
                       [p["bpp"] for p in test], [p["psnr"] for p in test])
    except ValueError:
        return None


def run_encode_ab(images: Sequence[tuple[str, Path]], *, old: str = DEFAULT_OLD, preset: str = "balanced",
                  lambdas: Sequence[float] = (0.002, 0.0067, 0.02), threads: int = 1, weights: str | None = None,
                  forward: bool = False, log=lambda msg: None) -> dict[str, Any]:
    """Encodes every image at every λ with the old and the new encoder, alternating; returns the summary.

    Args:
        images: sequence of (name, path to the image file).
        old: git revision of the old ``codec``.
        preset: preset both versions encode with.
        lambdas: λ of the RD points.
        threads: torch threads of each child.
        weights: weights file both load; None: each its own shipped default (they must be the same weights).
        forward: also code the ``fast`` forward pass (new tree) and give BD-rates against it.
        log: receives one line per encode.
    """
    if not images:
        raise ValueError("no images")
    with tempfile.TemporaryDirectory() as tmp:
        children = {"old": _Child(_old_tree(old, Path(tmp)), threads, weights),
                    "new": _Child(ROOT, threads, weights)}
        try:
            if children["old"].info["weights"] != children["new"].info["weights"]:
                raise ValueError("the two versions load different weights; pass --weights to give both the same")
            records = []
            for i, (name, path) in enumerate(images):
                record = {"image": name, "points": {"old": [], "new": []}}
                for j, lmbda in enumerate(lambdas):
                    order = ("old", "new") if (i * len(lambdas) + j) % 2 == 0 else ("new", "old")
                    for side in order:
                        p = children[side].encode(path, {"preset": preset, "lmbda": float(lmbda)})
                        record["points"][side].append({"label": lmbda, **p})
                        log(f"{name} λ={lmbda} {side}: {p['bpp']:.4f} bpp {p['psnr']:.2f} dB "
                            f"{p['wall_s']:.1f} s wall {p['cpu_s']:.1f} s cpu")
                    if forward:
                        p = children["new"].encode(path, {"preset": "fast", "lmbda": float(lmbda), "rate_control": False})
                        record["points"].setdefault("forward", []).append({"label": lmbda, **p})
                records.append(record)
        finally:
            for c in children.values():
                c.close()
    return _summarize(records, old, preset, lambdas, threads, children["new"].info)


def _summarize(records, old, preset, lambdas, threads, info) -> dict[str, Any]:
    # the curve averaged over images, point by point (as bench adapt's "avg curve")
    curves = {k: [{"bpp": float(np.mean([r["points"][k][j]["bpp"] for r in records])),
                   "psnr": float(np.mean([r["points"][k][j]["psnr"] for r in records]))} for j in range(len(lambdas))]
              for k in records[0]["points"]}
    per_image = [_bd(r["points"]["old"], r["points"]["new"]) for r in records]
    per_image = [v for v in per_image if v is not None]

    def total(side, key):
        return sum(p[key] for r in records for p in r["points"][side])

    out = {"old": old, "preset": preset, "lambdas": list(lambdas), "threads": threads, "weights": info["weights"],
           "num_images": len(records), "images": [r["image"] for r in records],
           "bd_rate_new_vs_old": _bd(curves["old"], curves["new"]),
           "bd_rate_new_vs_old_per_image_mean": float(np.mean(per_image)) if per_image else None,
           "wall_s_per_encode": {s: total(s, "wall_s") / (len(records) * len(lambdas)) for s in ("old", "new")},
           "cpu_s_per_encode": {s: total(s, "cpu_s") / (len(records) * len(lambdas)) for s in ("old", "new")},
           "records": records}
    out["speedup_wall"] = out["wall_s_per_encode"]["old"] / out["wall_s_per_encode"]["new"]
    out["speedup_cpu"] = out["cpu_s_per_encode"]["old"] / out["cpu_s_per_encode"]["new"]
    if "forward" in curves:
        out["bd_rate_vs_forward"] = {s: _bd(curves["forward"], curves[s]) for s in ("old", "new")}
    return out


def _f(v, spec) -> str:
    return "n/a" if v is None else format(v, spec)


def _cmd(args: argparse.Namespace) -> int:
    if args.skip < 0 or (args.limit is not None and args.limit < 1):
        raise ValueError("--skip must be 0 or more and --limit 1 or more")
    if not Path(args.data).is_dir():
        raise ValueError(f"not a folder: {args.data}")
    # resolved: the encoder children run in another working directory
    paths = sorted(p for p in Path(args.data).resolve().iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    paths = paths[args.skip:][:args.limit]
    if not paths:
        raise ValueError(f"no .png/.jpg images in {args.data} (after --skip)")
    s = run_encode_ab([(p.stem, p) for p in paths], old=args.old, preset=args.preset, lambdas=args.lambdas,
                      threads=args.threads, weights=args.weights, forward=args.forward,
                      log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(f"{s['preset']}: new vs old ({s['old']}), {s['num_images']} images x {len(s['lambdas'])} λ, "
          f"{s['threads']} thread(s)")
    print(f"BD-rate new vs old: {_f(s['bd_rate_new_vs_old'], '+.2f')} % (average curve), "
          f"{_f(s['bd_rate_new_vs_old_per_image_mean'], '+.2f')} % (mean per image)")
    print(f"seconds per encode, wall: old {s['wall_s_per_encode']['old']:.2f}, new {s['wall_s_per_encode']['new']:.2f}"
          f" ({s['speedup_wall']:.2f}x); cpu: old {s['cpu_s_per_encode']['old']:.2f}, "
          f"new {s['cpu_s_per_encode']['new']:.2f} ({s['speedup_cpu']:.2f}x)")
    if "bd_rate_vs_forward" in s:
        print(f"BD-rate vs the forward pass: old {_f(s['bd_rate_vs_forward']['old'], '+.2f')} %, "
              f"new {_f(s['bd_rate_vs_forward']['new'], '+.2f')} %")
    if args.out:
        report.write_json(s, Path(args.out) / "encode_ab.json")
        print(f"wrote {Path(args.out) / 'encode_ab.json'}")
    return 0


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = "Time and BD-rate of one preset: this tree's encoder against an older revision's."
    parser.add_argument("--data", type=Path, required=True, help="folder of .png/.jpg images")
    parser.add_argument("--limit", type=int, default=3, help="first N images (sorted by name)")
    parser.add_argument("--skip", type=int, default=0, help="leave out the first N images")
    parser.add_argument("--old", default=DEFAULT_OLD, help="git revision of the old encoder")
    parser.add_argument("--preset", default="balanced", help="preset both encode with")
    parser.add_argument("--lambdas", type=parse_floats, default=(0.002, 0.0067, 0.02), help="λ values")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per encoder")
    parser.add_argument("--weights", default=None, help="weights file both versions load")
    parser.add_argument("--forward", action="store_true", help="also BD-rates against the fast forward pass")
    parser.add_argument("--out", type=Path, default=None, help="folder for encode_ab.json")
    parser.set_defaults(func=_cmd)
    return parser


def add_encode_ab_subparser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers ``encode-ab`` under the ``bench`` command."""
    return _configure(subparsers.add_parser("encode-ab", help="one preset, old vs new encoder: time and BD-rate"))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.encode_ab``: exit 0 ok, 2 bad input."""
    return run_standalone(_configure(argparse.ArgumentParser(prog="metalic bench encode-ab")), argv)


if __name__ == "__main__":
    sys.exit(main())
