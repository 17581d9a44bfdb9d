"""Rendering Gaussians without gradients, front to back in depth-sorted batches, in bounded
memory and with early termination: the path of every render that trains nothing (a teacher's
targets, evaluation, the viewer, exports) where the compiled CPU blending (``splat_cpu``) does
not run: CUDA tensors without gsplat, float64, ``--splat.render.backend torch``, or no build.

The differentiable path (``splat.composite``) keeps every (Gaussian, pixel) pair of a view for
the backward pass: a 3DGS file of millions of Gaussians makes ~10^8 of them a view, more than
24 GiB. Here the visible Gaussians, sorted by depth, are taken in batches of about
``batch_pairs`` box pixels; each batch's pairs (``splat.chord_pairs``) are composited over the
log transmittance its pixels carry from the batches in front, then dropped. Before a batch, the
Gaussians whose box is already opaque (transmittance below ``T_MIN`` at every pixel, 3DGS's
stop) are skipped: they would add nothing; pairs at such pixels are dropped too. The image is the one the
differentiable path makes (the same pairs in the same order; tested against the dense
reference).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from fieldkit.render.splat import T_MIN, Projection, chord_pairs, finish, pair_values, pixel_boxes

BATCH_PAIRS = 1 << 20
"""Box pixels a batch: small enough that the batches in front hide much of each batch (a
200 x 200 view of 2.3M Gaussians, ``apps/bench_splat_scale.py``: 1.36 s at 2^20, 1.62 s at 2^22,
1.52 s at 2^18)."""


def render_front_to_back(proj: Projection, colors: Tensor, width: int, height: int,
                         background: Tensor | None = None, batch_pairs: int = BATCH_PAIRS
                         ) -> dict[str, Tensor]:
    """colors [N, D]; background [D] or None (black) -> "rgb" [H, W, D], "depth" [H, W, 1],
    "alpha" [H, W, 1], as ``splat.composite`` (not differentiable)."""
    with torch.no_grad():
        d = colors.shape[1]
        per_gaussian = torch.cat([proj.means2d, proj.conics, proj.opacities[:, None],
                                  proj.depths[:, None], colors], 1)   # [N, 7 + D]
        acc = torch.zeros(height * width, d + 2, dtype=per_gaussian.dtype,
                          device=colors.device)
        log_t = torch.zeros(height * width, dtype=torch.float64, device=colors.device)
        vis = torch.nonzero(proj.visible).squeeze(1)
        vis = vis[torch.argsort(proj.depths[vis], stable=True)]       # front to back
        box = pixel_boxes(proj, width, height)[vis]                   # [V, 4]
        area = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
        cum = torch.cumsum(area, 0)
        marks = torch.arange(1, int(cum[-1]) // batch_pairs + 1 if len(cum) else 1,
                             device=cum.device) * batch_pairs
        bounds = [0] + torch.searchsorted(cum, marks).add(1).tolist() + [len(vis)]
        live_px = _LivePixels(box, width, height)
        stop = math.log(T_MIN)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if hi <= lo:
                continue
            keep = live_px.any_in(lo, hi)
            if not bool(keep.any()):
                continue
            b = box[lo:hi][keep]
            g, pix = chord_pairs(proj, vis[lo:hi][keep], b[:, 0], b[:, 2], b[:, 1], b[:, 3],
                                 width)
            live = log_t.index_select(0, pix) > stop       # pixels still taking colour
            g, pix = g[live], pix[live]
            order = torch.argsort(pix, stable=True)        # per pixel, front to back
            g, pix = g[order], pix[order]
            vals, log1m = pair_values(per_gaussian, g, pix, width,
                                      prior=log_t.index_select(0, pix))
            acc.index_add_(0, pix, vals)
            log_t.index_add_(0, pix, log1m)
            live_px.update(log_t > stop)
        return finish(acc, d, width, height, background)


class _LivePixels:
    """Which pixels still take colour, and which Gaussians' boxes hold one of them (a
    summed-area table of the live pixels, rebuilt after each batch)."""

    def __init__(self, box: Tensor, width: int, height: int):
        self.box, self.w, self.h = box, width, height
        self.sat = None    # [H + 1, W + 1] counts of live pixels; None: all live

    def update(self, live: Tensor) -> None:
        """live [H * W] bool: pixels whose transmittance is still above the stop."""
        sat = torch.zeros(self.h + 1, self.w + 1, dtype=torch.int32, device=live.device)
        sat[1:, 1:] = live.reshape(self.h, self.w).int().cumsum(0).cumsum(1)
        self.sat = sat

    def any_in(self, lo: int, hi: int) -> Tensor:
        """[hi - lo] bool: Gaussians lo:hi (of the sorted ones) whose box holds a live pixel."""
        if self.sat is None:
            return torch.ones(hi - lo, dtype=torch.bool, device=self.box.device)
        x0, y0, x1, y1 = self.box[lo:hi].unbind(1)
        s = self.sat
        return (s[y1, x1] - s[y0, x1] - s[y1, x0] + s[y0, x0]) > 0
