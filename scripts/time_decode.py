"""Median seconds of `codec.pipeline.decode` of one stream, in this process, one thread unless told.

    python scripts/time_decode.py STREAM [--runs 7] [--threads N] [--png LEVEL]

``--threads`` is torch's thread count, which the decoder's strips use
(codec.tiling); ``--png`` adds the writing of the decoded PNG at that zlib
level to each timed decode (end to end, as ``metalic decode`` does).

Put another checkout's root first on PYTHONPATH to time its decoder on the same
stream (old against new: `git worktree add --detach /tmp/old <rev>`, then
`PYTHONPATH=/tmp/old python scripts/time_decode.py STREAM`).
"""

import argparse
import io
import statistics
import time

import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stream")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--png", type=int, default=None, metavar="LEVEL")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import codec
    from codec.pipeline import decode

    data = open(args.stream, "rb").read()

    def once():
        image = decode(data).image
        if args.png is not None:
            image.save(io.BytesIO(), format="PNG", compress_level=args.png)

    once()  # model load and first-call costs are not the decode's
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        once()
        times.append(time.perf_counter() - t)
    print(f"{codec.__file__} ({args.threads} threads, png {args.png}): median {statistics.median(times):.4f} s over {args.runs} "
          f"(min {min(times):.4f}, max {max(times):.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
