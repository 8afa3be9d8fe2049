"""Bias-cluster search (M6): one decoder bias-bank index per 256x256 patch.

The decoder adds ``bank_l[index]`` after each of its convs, per patch (see
:class:`codec.layers.BiasBank`); the encoder picks the indices. Indices are
sent raw (one byte per patch, plus a 4-byte count), so their rate does not
depend on which index is chosen and the search minimizes distortion alone.
"""

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..constants import PATCH_SIZE

LATENT_CELL = 16
"""Pixels. Side of one y cell (the analysis transform's total stride)."""

MARGIN_CELLS = 4
"""y cells. Context synthesized around a patch. The synthesis transform's
receptive field reaches ±30 px from a y cell (four stride-2 deconvs of
kernel 5: 16 + 8 + 4 + 2), so 64 px of context makes the crop exact on the
patch and the ``RING`` around it."""

RING = 16
"""Pixels. Band around a patch where its offsets still change the output
(a layer-0 offset reaches 8 + 4 + 2 = 14 px); distortion is measured on the
patch plus this band, so neighbours' pixels are counted."""

DEFAULT_SHORTLIST = 16
"""Count. Candidates per patch evaluated exactly, ranked by the first-order estimate."""

BATCH = 8
"""Count. Candidates synthesized together in one batch."""


@dataclass
class BiasResult:
    """What :func:`search_bias` returns.

    Attributes:
        indices: np.ndarray (h_p, w_p) uint8. One bank index per patch, or
            None when the search was skipped.
        sse_start: float. Squared error (sum, [0, 1] scale) with every index 0.
        sse_best: float. Squared error with ``indices`` (sum of the per-patch
            measured regions' improvements applied to ``sse_start``).
        evaluated: int. Candidate syntheses run.
        seconds: float. Wall time.
        skipped: str or None. Why nothing was searched (empty bank, ...).
    """

    indices: np.ndarray | None
    sse_start: float
    sse_best: float
    evaluated: int
    seconds: float
    skipped: str | None = None


class _Synth:
    """Synthesis of latent crops with per-patch bias offsets added by forward hooks.

    ``BiasBank.offset`` aligns its patch grid with the image origin, so a crop
    that starts inside a patch cannot go through ``synthesize(bias_indices=...)``.
    The hooks add, after each decoder conv, the offsets of the crop's own pixels,
    gathered from a per-layer patch-id map built exactly as ``BiasBank.offset``
    builds its index map (tested against the full synthesis).
    """

    def __init__(self, backend, y_hat, rate_index, lambda_k, grid):
        self.b, self.y_hat, self.rate_index, self.lambda_k = backend, y_hat, rate_index, lambda_k
        net = backend.net
        self.bank, self.convs = net.bias_bank, net.g_s_convs
        hp, wp = grid
        H, W = y_hat.shape[-2] * LATENT_CELL, y_hat.shape[-1] * LATENT_CELL
        ids = torch.arange(hp * wp).view(hp, wp)
        self.maps = []  # per layer: (H_l, W_l) long patch id
        for layer, stride in enumerate(self.bank.strides):
            cell = PATCH_SIZE // stride
            m = ids.repeat_interleave(cell, 0).repeat_interleave(cell, 1)
            h, w = H // stride, W // stride
            if m.shape[0] < h:
                m = torch.cat([m, m[-1:].expand(h - m.shape[0], -1)], 0)
            if m.shape[1] < w:
                m = torch.cat([m, m[:, -1:].expand(-1, w - m.shape[1])], 1)
            self.maps.append(m[:h, :w])

    def offsets(self, layer, choice: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
        """(B, C_l, h, w) offsets of a crop for B index assignments ``choice`` (B, P)."""
        stride = self.bank.strides[layer]
        s = LATENT_CELL // stride
        pid = self.maps[layer][rows.start * s:rows.stop * s, cols.start * s:cols.stop * s]
        idx = choice[:, pid]  # (B, h, w)
        return self.bank.bank(layer)[idx].permute(0, 3, 1, 2)

    def run(self, choice: torch.Tensor, rows: slice, cols: slice, extra=None) -> torch.Tensor:
        """x̂ of the y crop ``[rows, cols]`` (in y cells) for each row of ``choice``.

        ``extra``: optional list of per-layer tensors added on top (for gradients).
        """
        y = self.y_hat[..., rows, cols].expand(choice.shape[0], -1, -1, -1)
        handles = []
        for layer, conv in enumerate(self.convs):
            def hook(_m, _inp, out, layer=layer):
                off = self.offsets(layer, choice, rows, cols).to(out.dtype)
                if extra is not None:
                    off = off + extra[layer].to(out.dtype)
                return out + off
            handles.append(conv.register_forward_hook(hook))
        try:
            return self.b.synthesize(y, self.rate_index, self.lambda_k, None).float()
        finally:
            for hd in handles:
                hd.remove()


def _usable_rows(bank) -> list[int]:
    """Bank rows that differ from row 0 (the trained biases) in at least one layer."""
    nz = torch.zeros(bank.bank(0).shape[0], dtype=torch.bool)
    for layer in range(bank.num_layers):
        nz |= bank.bank(layer).abs().sum(1).cpu() > 0
    nz[0] = False
    return nz.nonzero().flatten().tolist()


@torch.no_grad()
def search_bias(backend, x: torch.Tensor, y_hat: torch.Tensor, rate_index: int, lambda_k: torch.Tensor | None = None,
                *, size: tuple[int, int] | None = None, shortlist: int | None = DEFAULT_SHORTLIST,
                progress=None) -> BiasResult:
    """Greedy per-patch choice of bias-bank indices on the synthesized output.

    Zou et al., "Learning to Learn to Compress" (L²C), section III-D: after
    training, content-specific decoder biases are clustered into 255 sets; at
    inference the encoder "selects the optimal content-specific bias terms for
    each image patch" and signals one 8-bit index per patch (0 = default biases).

    ::

        1. one backward pass: ∂SSE/∂offset_l per patch  (first-order estimate
           ΔSSE(p, c) ≈ Σ_l g_{p,l} · (bank_l[c] − bank_l[0]))
        2. for each patch p in raster order (the others fixed at their choice):
             for c in {0} ∪ shortlist(p): synthesize the y crop around p
             (MARGIN_CELLS of context), SSE on patch p + RING
             choose the c with the lowest SSE
        3. indices (h_p, w_p) uint8

    Patches' receptive fields overlap at their borders, so each candidate is
    measured on the patch *and* the band its offsets reach, with the
    neighbours' current choices in place.

    Args:
        backend: a backend with ``supports_bias`` (exposes ``.net.bias_bank``).
        x: Tensor (1, 3, H, W) in [0, 1], padded.
        y_hat: Tensor (1, M, H/16, W/16). Hard-quantized latent.
        rate_index: int. λ grid index.
        lambda_k: Tensor (1, K) or None. The λ_k the file will carry.
        size: (h, w) or None. Original size (distortion only counts there).
        shortlist: int or None. Candidates per patch evaluated exactly after
            the first-order ranking; None evaluates every non-empty bank row.
        progress: callable (done_patches, total_patches, sse) or None.

    Returns:
        BiasResult. ``indices`` None with ``skipped`` set when the bank is empty.
    """
    t0 = time.perf_counter()
    bank = backend.net.bias_bank
    h, w = size or tuple(x.shape[-2:])
    rows_all = _usable_rows(bank)
    if not rows_all:
        return BiasResult(None, 0.0, 0.0, 0, time.perf_counter() - t0, "bias bank is empty (no clusters trained)")
    dev = x.device
    y_hat = y_hat.to(dev)
    grid = bank.grid_shape(h, w)
    hp, wp = grid
    synth = _Synth(backend, y_hat, rate_index, lambda_k, grid)
    P = hp * wp
    choice = torch.zeros(1, P, dtype=torch.long, device=dev)
    hy, wy = y_hat.shape[-2:]
    full = (slice(0, hy), slice(0, wy))

    # 1. first-order ranking from one backward pass over the whole image
    cand = torch.tensor(rows_all, device=dev)
    if shortlist is not None and len(rows_all) > shortlist:
        extra = [torch.zeros(1, bank.bank(k).shape[1], hy * LATENT_CELL // s, wy * LATENT_CELL // s, device=dev,
                             requires_grad=True) for k, s in enumerate(bank.strides)]
        with torch.enable_grad():
            x_hat = synth.run(choice, *full, extra=extra)
            loss = (x_hat[..., :h, :w].clamp(0, 1) - x[..., :h, :w]).pow(2).sum()
            grads = torch.autograd.grad(loss, extra)
        score = torch.zeros(P, len(rows_all), device=dev)
        for k, g in enumerate(grads):
            pid = synth.maps[k].to(dev).flatten()
            pooled = torch.zeros(P, g.shape[1], device=dev).index_add_(0, pid, g[0].flatten(1).t())
            score += pooled @ bank.bank(k)[cand].t()
        ranked = [cand[score[p].argsort()[:shortlist]].tolist() for p in range(P)]
    else:
        ranked = [rows_all] * P

    # 2. greedy exact evaluation per patch
    x_full = synth.run(choice, *full)
    sse_start = (x_full[..., :h, :w].clamp(0, 1) - x[..., :h, :w]).pow(2).sum().item()
    total_gain, evaluated = 0.0, 0
    for p in range(P):
        pi, pj = divmod(p, wp)
        # measured region (pixels) and the y crop around it
        r0, r1 = max(0, pi * PATCH_SIZE - RING), min(h, (pi + 1) * PATCH_SIZE + RING)
        c0, c1 = max(0, pj * PATCH_SIZE - RING), min(w, (pj + 1) * PATCH_SIZE + RING)
        if r0 >= r1 or c0 >= c1:
            continue
        yr = slice(max(0, r0 // LATENT_CELL - MARGIN_CELLS), min(hy, -(-r1 // LATENT_CELL) + MARGIN_CELLS))
        yc = slice(max(0, c0 // LATENT_CELL - MARGIN_CELLS), min(wy, -(-c1 // LATENT_CELL) + MARGIN_CELLS))
        oy, ox = yr.start * LATENT_CELL, yc.start * LATENT_CELL
        target = x[..., r0:r1, c0:c1]
        options = [int(choice[0, p])] + [c for c in ranked[p] if c != int(choice[0, p])]
        errs = []
        for i in range(0, len(options), BATCH):
            chunk = options[i:i + BATCH]
            trial = choice.expand(len(chunk), -1).clone()
            trial[:, p] = torch.tensor(chunk, device=dev)
            out = synth.run(trial, yr, yc)[..., r0 - oy:r1 - oy, c0 - ox:c1 - ox]
            errs += (out.clamp(0, 1) - target).pow(2).flatten(1).sum(1).tolist()
            evaluated += len(chunk)
        best = int(np.argmin(errs))
        if errs[best] < errs[0]:
            choice[0, p] = options[best]
            total_gain += errs[0] - errs[best]
        if progress is not None:
            progress(p + 1, P, sse_start - total_gain)
    indices = choice.view(hp, wp).cpu().numpy().astype(np.uint8)
    return BiasResult(indices, sse_start, sse_start - total_gain, evaluated, time.perf_counter() - t0)
