"""The density of a Gaussian mixture at arbitrary points, through a spatial hash of the Gaussians.

sigma(x) = sum_i o_i exp(-(x - mu_i)^T Sigma_i^-1 (x - mu_i) / 2), each Gaussian truncated to
the sphere of three times its largest standard deviation. The mesh export and the distillation query it
on millions of points, so the Gaussians are binned into a uniform grid of cells (sorted cell
keys, no dense grid) and every point meets only the Gaussians of its own cell.
"""
from __future__ import annotations

import torch
from torch import Tensor

from fieldkit.splats.transform import quat_to_rotmat

CUTOFF = 3.0
"""A Gaussian contributes nothing farther from its centre than this x its largest standard
deviation."""


def _cell_keys(ijk: Tensor, dims: Tensor) -> Tensor:
    return (ijk[..., 0] * dims[1] + ijk[..., 1]) * dims[2] + ijk[..., 2]


def mixture_density(points: Tensor, means: Tensor, quats: Tensor, scales: Tensor,
                    opacities: Tensor, max_pairs: int = 1 << 22, max_cells: int = 64
                    ) -> Tensor:
    """points [M, 3], means [N, 3], quats [N, 4], scales [N, 3] (standard deviations),
    opacities [N] in [0, 1] -> [M] density (differentiable in the Gaussians and the points)."""
    m = len(points)
    if m == 0 or len(means) == 0:
        return points.new_zeros(m)
    with torch.no_grad():
        radius = CUTOFF * scales.detach().max(1).values  # [N]
        lo_all = torch.minimum(points.detach().min(0).values, (means - radius[:, None]).min(0).values)
        hi_all = torch.maximum(points.detach().max(0).values, (means + radius[:, None]).max(0).values)
        # Cells about the size of a typical Gaussian's support, at most max_cells per side.
        span = (hi_all - lo_all).max().clamp_min(1e-6)
        cell = torch.maximum(2 * radius.median(), span / max_cells)
        dims = torch.ceil((hi_all - lo_all) / cell).long().clamp_min(1)
        g_lo = ((means.detach() - radius[:, None] - lo_all) / cell).floor().long()
        g_hi = ((means.detach() + radius[:, None] - lo_all) / cell).floor().long()
        g_lo, g_hi = g_lo.clamp(min=0), torch.minimum(g_hi, dims - 1)
        ext = g_hi - g_lo + 1  # [N, 3]
        counts = ext.prod(1)
        owner = torch.repeat_interleave(torch.arange(len(means)), counts)
        rank = torch.arange(len(owner)) - (torch.cumsum(counts, 0) - counts)[owner]
        e = ext[owner]
        ijk = g_lo[owner] + torch.stack([rank // (e[:, 1] * e[:, 2]),
                                         (rank // e[:, 2]) % e[:, 1], rank % e[:, 2]], 1)
        keys = _cell_keys(ijk, dims)
        order = torch.argsort(keys)
        keys, cell_gauss = keys[order], owner[order]
        p_cell = ((points.detach() - lo_all) / cell).floor().long()
        p_keys = _cell_keys(torch.minimum(p_cell.clamp(min=0), dims - 1), dims)
        start = torch.searchsorted(keys, p_keys)
        n_pairs = torch.searchsorted(keys, p_keys, right=True) - start
    # Precision factor A with |A (x - mu)|^2 = Mahalanobis distance^2.
    A = quat_to_rotmat(quats).transpose(1, 2) / scales[:, :, None]  # [N, 3, 3]
    out = []
    cum = torch.cumsum(n_pairs, 0)
    s = 0
    while s < m:  # chunks of points with about max_pairs pairs
        e_ = int(torch.searchsorted(cum, (cum[s - 1] if s else 0) + max_pairs, right=True))
        e_ = max(e_, s + 1)
        cnt = n_pairs[s:e_]
        pt = torch.repeat_interleave(torch.arange(e_ - s), cnt)
        r = torch.arange(len(pt)) - (torch.cumsum(cnt, 0) - cnt)[pt]
        g = cell_gauss[start[s:e_][pt] + r]
        diff = points[s:e_][pt] - means[g]
        y = torch.einsum("pij,pj->pi", A[g], diff)
        d2 = (y * y).sum(1)
        inside = (diff.detach() ** 2).sum(1) <= radius[g] ** 2  # the truncation sphere
        contrib = torch.where(inside, opacities[g] * torch.exp(-0.5 * d2), torch.zeros_like(d2))
        out.append(points.new_zeros(e_ - s).index_add(0, pt, contrib))
        s = e_
    return torch.cat(out)
