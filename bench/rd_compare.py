"""One RD picture and BD table of several ``metalic bench rd`` runs (presets) over the same images.

Each run folder holds the ``summary.json`` of one ``metalic bench rd --preset ...`` run;
its metalic curve is shown under the run's label beside the anchors of the first run,
and every later run is also compared with the first (the gain of a preset over ``fast``).
The runs must cover the same images, so that every curve is an average over one set::

    python -m bench.rd_compare --out docs/results/rd-kodak-presets \\
        fast=docs/results/rd-kodak-default balanced=docs/results/rd-kodak-balanced
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .report import METALIC_CURVE, bd_against_anchors, plot_rd, write_json


def load_runs(runs: Sequence[tuple[str, Path]]) -> tuple[list[str], dict[str, list], dict[str, list]]:
    """(images, metalic curve per label, anchor curves of the first run); ValueError on mismatched runs."""
    images: list[str] | None = None
    metalic: dict[str, list] = {}
    anchors: dict[str, list] = {}
    for label, folder in runs:
        path = folder / "summary.json"
        if not path.is_file():
            raise ValueError(f"{path} does not exist (run `metalic bench rd --out {folder}` first)")
        summary = json.loads(path.read_text())
        if METALIC_CURVE not in summary["curves"]:
            raise ValueError(f"{path} has no {METALIC_CURVE} curve (a --no-metalic run)")
        names = list(summary["images"])
        if images is None:
            images = names
            anchors = {k: v for k, v in summary["curves"].items() if k != METALIC_CURVE}
        elif names != images:
            raise ValueError(f"{folder} measured other images than {runs[0][1]}; compare runs over one set")
        if label in metalic:
            raise ValueError(f"label {label!r} given twice")
        metalic[label] = summary["curves"][METALIC_CURVE]
    return images or [], metalic, anchors


def compare(runs: Sequence[tuple[str, Path]], out: Path) -> dict[str, Any]:
    images, metalic, anchors = load_runs(runs)
    first = next(iter(metalic))
    bd = {label: bd_against_anchors({METALIC_CURVE: curve, **anchors, **({first: metalic[first]} if label != first else {})})
          for label, curve in metalic.items()}
    result = {"images": images, "runs": {label: str(folder) for label, folder in runs}, "bd": bd}
    out.mkdir(parents=True, exist_ok=True)
    write_json(result, out / "compare.json")
    columns = [*anchors, first]
    header = "| metalic | " + " | ".join(f"vs {a} (%)" for a in columns) + " |"
    lines = [f"# BD-rate of each metalic run against each anchor ({len(images)} images, average curves)", "",
             header, "|---|" + "---:|" * len(columns)]
    for label, rows in bd.items():
        cells = [f"{rows[a]['bd_rate']:+.2f}" if a in rows and rows[a]["bd_rate"] is not None else "–"
                 for a in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    (out / "table.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    curves = {f"{METALIC_CURVE} {label}": curve for label, curve in metalic.items()} | anchors
    plot_rd(curves, out / "rd.png", title=f"{len(images)} images, real file sizes")
    return result


def _run_arg(text: str) -> tuple[str, Path]:
    label, sep, folder = text.partition("=")
    if not sep or not label or not folder:
        raise argparse.ArgumentTypeError(f"expected LABEL=FOLDER, got {text!r}")
    return label, Path(folder)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rd_compare", description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=_run_arg, help="LABEL=FOLDER of a bench rd run")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        result = compare(args.runs, args.out)
    except ValueError as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 2
    print((args.out / "table.md").read_text(), end="")
    return 0 if result["bd"] else 1


if __name__ == "__main__":
    sys.exit(main())
