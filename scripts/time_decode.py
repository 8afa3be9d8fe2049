"""Median seconds of `codec.pipeline.decode` of one stream, in this process, one thread.

    python scripts/time_decode.py STREAM [--runs 7]

Put another checkout's root first on PYTHONPATH to time its decoder on the same
stream (old against new: `git worktree add --detach /tmp/old <rev>`, then
`PYTHONPATH=/tmp/old python scripts/time_decode.py STREAM`).
"""

import argparse
import statistics
import time

import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stream")
    p.add_argument("--runs", type=int, default=7)
    args = p.parse_args()
    torch.set_num_threads(1)
    import codec
    from codec.pipeline import decode

    data = open(args.stream, "rb").read()
    decode(data)  # model load and first-call costs are not the decode's
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        decode(data)
        times.append(time.perf_counter() - t)
    print(f"{codec.__file__}: median {statistics.median(times):.4f} s over {args.runs} "
          f"(min {min(times):.4f}, max {max(times):.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
