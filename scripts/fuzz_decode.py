"""Structured fuzzing of the decoder: crafted valid-checksum containers in process and through ``POST /decode``.

The cases are tests/support/crafted.py's (each named by its seed); the test
suite runs a few hundred of them, this runs the documented counts and prints
a Markdown summary for docs/BENCHMARKS.md::

    python scripts/fuzz_decode.py                          # 5,000 in process, then 500 through a real service
    python scripts/fuzz_decode.py --cases 1000 --service 0 --first 5000
    python scripts/fuzz_decode.py --case 1234              # rebuild one case and decode it, with the full error
    python scripts/fuzz_decode.py --model mbt2018-vbr --cases 300 --service 0   # an autoregressive zoo model
    python scripts/fuzz_decode.py --cost kodim01.png       # decode time with the bounded coder and without

``--model`` forges for another model: ``mbt2018`` and ``mbt2018-vbr`` (whose
context loops decode their y strings) with small seeded weights written to a
temporary folder, in process only (the service decodes with its own models).

In process, a finding is any exception but ``BitstreamError``, a canonical
stream refused or decoded to other pixels than the encoder side's, or the RSS
over ``--rss-limit-mib``. A crash ends the process: ``--log`` then names the
seed it was decoding. Through the service (redis-server, uvicorn with the real
codec and the default limits, no worker), a finding is a 5xx, a 4xx that is not
problem+json, a dead API or the API's RSS over the limit.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "e2e")]


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        model = platform.processor() or "unknown CPU"
    import os

    return f"{model}, {os.cpu_count()} cores, torch threads 1"


def summary(title: str, report, seeds: range) -> str:
    lines = [f"**{title}**: {report.cases} cases (seeds {seeds.start}..{seeds.stop - 1}) in {report.seconds:.0f} s, "
             f"peak RSS {report.max_rss / 2**20:.0f} MiB, slowest case {report.slowest[0]:.2f} s "
             f"(seed {report.slowest[1]}), findings: {len(report.findings)}", "",
             "| outcome | cases |", "|---|---:|"]
    lines += [f"| {key} | {n} |" for key, n in report.outcomes.most_common()]
    lines += ["", "| strings (y kind) | cases |", "|---|---:|"]
    lines += [f"| {key} | {n} |" for key, n in report.kinds.most_common()]
    lines += [f"- finding: {f}" for f in report.findings]
    return "\n".join(lines)


def cost(path: str, runs: int = 7) -> None:
    """Median decode time of one image's stream with codec.rans's bounded coder, then CompressAI's plain one."""
    import statistics

    from compressai.entropy_models.entropy_models import _EntropyCoder

    from codec import bitstream
    from codec.pipeline import Encoder, decode

    encoder = Encoder(device="cpu")
    data = encoder.encode(Path(path).read_bytes(), {"preset": "fast", "target_bpp": 0.5}).bitstream
    models = [m for m in encoder.backend.net.modules() if hasattr(m, "entropy_coder")]

    p = bitstream.unpack(data)
    strings = [[s] for s in p.strings]

    def median_ms(step) -> float:
        # CPU time of this process: the machine may be shared, wall time would measure the neighbours
        step()
        times = []
        for _ in range(runs):
            t = time.process_time()
            step()
            times.append(time.process_time() - t)
        return statistics.median(times) * 1e3

    steps = {"entropy decoding (decompress_latents)": lambda: encoder.backend.net.decompress_latents(strings,
                                                                                                    p.latent_shape),
             "whole decode": lambda: decode(data)}
    bounded = {name: median_ms(step) for name, step in steps.items()}
    saved = [m.entropy_coder for m in models]
    for m in models:
        m.entropy_coder = _EntropyCoder("ans")
    plain = {name: median_ms(step) for name, step in steps.items()}
    for m, coder in zip(models, saved):
        m.entropy_coder = coder
    print(f"{Path(path).name}: {len(data)} bytes, CPU ms, median of {runs}")
    for name in steps:
        print(f"- {name}: bounded {bounded[name]:.1f} ms, CompressAI's unchecked coder {plain[name]:.1f} ms, "
              f"difference {bounded[name] - plain[name]:+.1f} ms")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=5000, help="cases decoded in process")
    parser.add_argument("--service", type=int, default=500, help="cases sent to POST /decode (0: none)")
    parser.add_argument("--first", type=int, default=0, help="first seed")
    parser.add_argument("--rss-limit-mib", type=int, default=4096)
    parser.add_argument("--log", default=str(Path(tempfile.gettempdir()) / "metalic-fuzz-decode.log"),
                        help="file the seed of each case is written to before it is decoded")
    parser.add_argument("--case", type=int, help="rebuild and decode this one seed, then stop")
    parser.add_argument("--every", type=int, default=0, help="print a running summary every N cases")
    parser.add_argument("--cost", metavar="IMAGE", help="time the bounded decoding on this image, then stop")
    parser.add_argument("--model", default="metalic-vr",
                        help="model to forge streams for: metalic-vr (default), mbt2018 or mbt2018-vbr "
                             "(small seeded weights; in process only)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    if args.cost:
        print(f"Machine: {machine()}")
        cost(args.cost)
        return 0
    from tests.support.crafted import AR_MODELS, StreamForge, run_cases, run_service_cases, small_ar_weights

    with tempfile.TemporaryDirectory() as weights_dir:
        if args.model in AR_MODELS:
            forge = StreamForge(args.model, str(small_ar_weights(args.model, weights_dir)))
        else:
            forge = StreamForge(args.model)
        if args.case is not None:
            case = forge.case(args.case)
            print(f"seed {case.seed}: {len(case.data)} bytes, {case.kind}, canonical={case.expect_ok}")
            result = forge.decode(case.data)
            print(f"decoded {result.image.size} {result.image.mode}")
            return 0

        print(f"Machine: {machine()}\n")
        seeds = range(args.first, args.first + args.cases)
        with open(args.log, "w") as log:
            report = run_cases(forge, seeds, forge.decode, args.rss_limit_mib << 20, log, args.every,
                               lambda r: print(summary("So far", r, seeds) + "\n", flush=True))
    print(summary(f"In process (codec.pipeline.decode, {args.model})", report, seeds))
    failed = bool(report.findings)
    if args.service and args.model != "metalic-vr":
        print(f"\n(no service run: the service decodes with its own models, not {args.model}'s test weights)")
    elif args.service:
        from e2e_helpers import API_KEY, Stack

        seeds = range(args.first, args.first + args.service)
        with tempfile.TemporaryDirectory() as tmp:
            stack = Stack(Path(tmp) / "stack", workers=0)
            stack.tmp.mkdir(parents=True)
            stack.start()
            try:
                time.sleep(1)
                service = run_service_cases(forge, seeds, stack.url, API_KEY, stack.procs["api"].pid,
                                            args.rss_limit_mib << 20, args.every,
                                            lambda r: print(summary("So far", r, seeds) + "\n", flush=True))
            finally:
                stack.stop()
        print()
        print(summary("Through POST /decode (uvicorn, real codec, default limits)", service, seeds))
        failed = failed or bool(service.findings)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
