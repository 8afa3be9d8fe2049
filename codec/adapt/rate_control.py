"""Rate search (M7): the rate parameter whose *real file* is closest to the target.

Every probe codes the image completely and measures the packed container, so
the figure rate control steers by is the real file size, header included.
"""

import math

from ..constants import LAMBDA_LEVELS
from ..options import DEFAULT_LAMBDA, RATE_TOLERANCE
from .coding import Coder
from .goal import Goal

MAX_PROBES = 14
"""Count. Coded probes a search may spend."""


def solve_monotone(measure, target: float, lo: int, hi: int, start: int, tol: float, max_probes: int = MAX_PROBES):
    """Finds an integer k in [lo, hi] with measure(k) ≈ target, measure increasing in k.

    Regula falsi on (k, log measure) with bisection safeguards; returns the list of
    probes [(k, value, candidate)] so callers can pick by their own rule.
    """
    probes = []
    if hi - lo < 16:  # a few quality levels: try them in order, stop once past the target
        for k in range(lo, hi + 1):
            probes.append((k, *measure(k)))
            if probes[-1][1] >= target:
                break
        return probes

    def probe(k):
        k = min(hi, max(lo, int(k)))
        for p in probes:
            if p[0] == k:
                return p
        value, cand = measure(k)
        probes.append((k, value, cand))
        return probes[-1]

    k0 = probe(start)
    if abs(k0[1] - target) <= tol * target:
        return probes
    # log-log slope ≈ 0.6 for rate vs λ: a good second guess
    step = int(math.log(target / max(k0[1], 1e-9)) / 0.6 / (math.log(1e4) / LAMBDA_LEVELS))
    k1 = probe(k0[0] + step if step else k0[0] + (1 if target > k0[1] else -1) * 500)
    while len(probes) < max_probes:
        below = max((p for p in probes if p[1] < target), key=lambda p: p[0], default=None)
        above = min((p for p in probes if p[1] >= target), key=lambda p: p[0], default=None)
        if below is None:  # everything too big: move down
            if above[0] == lo:
                break
            probe(max(lo, above[0] - 2 * max(500, abs(k1[0] - k0[0]))))
            continue
        if above is None:
            if below[0] == hi:
                break
            probe(min(hi, below[0] + 2 * max(500, abs(k1[0] - k0[0]))))
            continue
        if above[0] - below[0] <= 1:
            break
        la, lb = math.log(max(above[1], 1e-9)), math.log(max(below[1], 1e-9))
        f = (math.log(target) - lb) / (la - lb) if la > lb else 0.5
        k = below[0] + f * (above[0] - below[0])
        k = min(above[0] - 1, max(below[0] + 1, round(k)))
        p = probe(k)
        if abs(p[1] - target) <= tol * target:
            break
    return probes


def search_rate(coder: Coder, x, img, opts, report):
    """Codes the plain forward pass at the rate parameter the options ask for.

    Returns:
        The best :class:`codec.pipeline.Candidate` (closest to a bpp target; the
        smallest file meeting a PSNR target; or the given/default λ).
    """
    b = coder.backend
    lo, hi = b.rate_range()
    n = {"i": 0}

    def coded(k):
        n["i"] += 1
        c = coder.code(x, img.rgb, img.mode, k)
        report({"stage": "rate_search", "step": n["i"], "steps": MAX_PROBES, "bpp": c.bpp, "psnr": c.psnr})
        return c

    if opts.target_bpp is None and opts.target_psnr is None:
        # a λ beyond this model's range codes at the range's end (the decoder rejects the rest)
        return coded(min(hi, max(lo, b.rate_index(opts.lmbda or DEFAULT_LAMBDA))))
    start = b.rate_index(DEFAULT_LAMBDA)
    if opts.target_bpp is not None:
        probes = solve_monotone(lambda k: ((c := coded(k)).bpp, c), opts.target_bpp, lo, hi, start,
                                RATE_TOLERANCE * 0.5 if opts.rate_control else RATE_TOLERANCE)
        return Goal("bpp", opts.target_bpp).best(p[2] for p in probes)
    probes = solve_monotone(lambda k: ((c := coded(k)).psnr, c), opts.target_psnr, lo, hi, start, 0.002)
    return Goal("psnr", opts.target_psnr).best(p[2] for p in probes)
