"""The density (and colour) of a Gaussian mixture at arbitrary points, through a spatial hash of
the Gaussians.

sigma(x) = sum_i o_i g_i(x) with g_i(x) = exp(-(x - mu_i)^T Sigma_i^-1 (x - mu_i) / 2), each
Gaussian truncated to the sphere of three times its largest standard deviation; the colour
seen along direction d is the density-weighted mean of the Gaussians' own colours,
c(x, d) = sum_i o_i g_i(x) c_i(d) / sigma(x), the emission of a volume made of the mixture.
The mesh export and the distillation query it on millions of points, so the Gaussians are
binned into a uniform grid of cells (sorted cell keys, no dense grid) and every point meets
only the Gaussians of its own cell.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from fieldkit.encoders.sh import sh_encode
from fieldkit.splats.transform import quat_to_rotmat

CELL_FACTOR = 2.0
"""Side of the cells the Gaussians are binned into, in median support radii (1.0 and 0.7 were
no faster on a 34k-Gaussian lego model: fewer pairs, more registrations)."""
CUTOFF = 3.0
"""A Gaussian contributes nothing farther from its centre than this x its largest standard
deviation."""


def _cell_keys(ijk: Tensor, dims: Tensor) -> Tensor:
    """ijk [..., 3] cell indices, dims [..., 3] cells per axis -> flat keys [...]."""
    return (ijk[..., 0] * dims[..., 1] + ijk[..., 1]) * dims[..., 2] + ijk[..., 2]


POINT_BLOCK = 1 << 20
"""Points whose cells are looked up together (bounds the [points, levels] lookup tables)."""


@dataclass
class GaussianCells:
    """Gaussians registered in levels of cells, each level's cells twice the size of the last:
    a Gaussian goes to the finest level whose cell is at least its support radius, so it
    overlaps at most 3 cells an axis (27 registrations) whatever its size. (A single grid made
    a 3DGS scene's large background Gaussians register in up to a million cells each.) A point
    meets the Gaussians of its own cell at every level. Built once per set of Gaussians
    (``index_gaussians``) and queried by any points: a point outside the cells' box takes the
    nearest cell, whose Gaussians the support test then turns away."""

    lo: Tensor
    """[3] corner of the cells' box."""
    size: Tensor
    """[L] cell side of each level in use."""
    dims: Tensor
    """[L, 3] cells a side of each level."""
    base: Tensor
    """[L] first key of each level."""
    keys: Tensor
    """[R] sorted cell keys of the registrations."""
    gaussian: Tensor
    """[R] Gaussian of each registration."""


def index_gaussians(means: Tensor, radius: Tensor, max_cells: int = 1024) -> GaussianCells:
    """Register Gaussians (means [N, 3], support radii [N]) in levels of cells; the finest
    cells are about CELL_FACTOR median radii, at most ``max_cells`` a side."""
    with torch.no_grad():
        mu = means.detach()
        lo_all, hi_all = (mu - radius[:, None]).min(0).values, (mu + radius[:, None]).max(0).values
        span = (hi_all - lo_all).max().clamp_min(1e-6)
        cell0 = torch.maximum(CELL_FACTOR * radius.median(), span / max_cells)
        level = torch.ceil(torch.log2((radius / cell0).clamp_min(1.0))).long()
        used = torch.unique(level)                                  # [L]
        size = cell0 * torch.pow(2.0, used.to(cell0.dtype))         # [L]
        dims = torch.ceil((hi_all - lo_all)[None] / size[:, None]).long().clamp_min(1)  # [L, 3]
        cells = dims.prod(1)
        base = torch.cumsum(cells, 0) - cells
        li = torch.searchsorted(used, level)                        # [N] index into used
        c, d = size[li][:, None], dims[li]
        g_lo = ((mu - radius[:, None] - lo_all) / c).floor().long().clamp(min=0)
        g_hi = torch.minimum(((mu + radius[:, None] - lo_all) / c).floor().long(), d - 1)
        ext = g_hi - g_lo + 1  # [N, 3], at most 3 an axis
        counts = ext.prod(1)
        owner = torch.repeat_interleave(torch.arange(len(mu), device=mu.device), counts)
        rank = torch.arange(len(owner), device=mu.device) - (torch.cumsum(counts, 0)
                                                             - counts)[owner]
        e = ext[owner]
        ijk = g_lo[owner] + torch.stack([rank // (e[:, 1] * e[:, 2]),
                                         (rank // e[:, 2]) % e[:, 1], rank % e[:, 2]], 1)
        keys = base[li[owner]] + _cell_keys(ijk, d[owner])
        order = torch.argsort(keys)
        return GaussianCells(lo_all, size, dims, base, keys[order], owner[order])


def _pairs(points: Tensor, cells: GaussianCells, max_pairs: int
           ) -> Iterator[tuple[int, int, Tensor, Tensor]]:
    """Chunks of (point, Gaussian) pairs that may overlap: (first point s, end point e, pt [P]
    point index within s..e, g [P] Gaussian index), about ``max_pairs`` pairs each."""
    n_levels, keys = len(cells.size), cells.keys
    for b0 in range(0, len(points), POINT_BLOCK):
        block = points[b0:b0 + POINT_BLOCK]
        with torch.no_grad():
            p_cell = ((block.detach() - cells.lo)[:, None] / cells.size[None, :, None]).floor()
            p_cell = torch.minimum(p_cell.long().clamp(min=0), cells.dims - 1)
            p_keys = (cells.base + _cell_keys(p_cell, cells.dims)).reshape(-1)  # point-major
            start = torch.searchsorted(keys, p_keys)
            n_pairs = torch.searchsorted(keys, p_keys, right=True) - start
            cum = torch.cumsum(n_pairs.reshape(-1, n_levels).sum(1), 0)   # [M]
        m, s = len(block), 0
        while s < m:
            e_ = int(torch.searchsorted(cum, (cum[s - 1] if s else 0) + max_pairs, right=True))
            e_ = max(e_, s + 1)
            cnt = n_pairs[s * n_levels:e_ * n_levels]
            q = torch.repeat_interleave(torch.arange(len(cnt), device=points.device), cnt)
            r = torch.arange(len(q), device=points.device) - (torch.cumsum(cnt, 0) - cnt)[q]
            yield b0 + s, b0 + e_, q // n_levels, cells.gaussian[start[s * n_levels:][q] + r]
            s = e_


def _weights(points: Tensor, means: Tensor, A: Tensor, radius: Tensor, opacities: Tensor,
             pt: Tensor, g: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The pairs (pt, g) whose point lies in the Gaussian's truncation sphere, and their
    o_g g_g(x_pt) [P']. The sphere test comes first, on the centres alone: most pairs of a
    cell fail it, and the precision factors are gathered only for the rest."""
    # index_select, not x[idx]: the same gather, faster on the CPU
    diff = points.index_select(0, pt) - means.index_select(0, g)
    with torch.no_grad():
        inside = torch.nonzero((diff * diff).sum(1) <= radius.index_select(0, g) ** 2)[:, 0]
    pt, g, diff = pt[inside], g[inside], diff.index_select(0, inside)
    y = torch.einsum("pij,pj->pi", A.index_select(0, g), diff)
    return pt, g, opacities.index_select(0, g) * torch.exp(-0.5 * (y * y).sum(1))


def mixture_density(points: Tensor, means: Tensor, quats: Tensor, scales: Tensor,
                    opacities: Tensor, max_pairs: int = 1 << 22, max_cells: int = 1024,
                    cells: GaussianCells | None = None) -> Tensor:
    """points [M, 3], means [N, 3], quats [N, 4], scales [N, 3] (standard deviations),
    opacities [N] in [0, 1] -> [M] density (differentiable in the Gaussians and the points).
    ``cells``: these Gaussians' ``index_gaussians`` (CUTOFF radii), to reuse across calls."""
    m = len(points)
    if m == 0 or len(means) == 0:
        return points.new_zeros(m)
    # Precision factor A with |A (x - mu)|^2 = Mahalanobis distance^2.
    A = quat_to_rotmat(quats).transpose(1, 2) / scales[:, :, None]  # [N, 3, 3]
    radius = CUTOFF * scales.detach().max(1).values
    out = []
    cells = cells or index_gaussians(means, radius, max_cells)
    for s, e, pt, g in _pairs(points, cells, max_pairs):
        pt, _, w = _weights(points[s:e], means, A, radius, opacities, pt, g)
        out.append(points.new_zeros(e - s).index_add(0, pt, w))
    return torch.cat(out)


@torch.no_grad()
def mixture_field(points: Tensor, dirs: Tensor, means: Tensor, quats: Tensor, scales: Tensor,
                  opacities: Tensor, sh: Tensor, max_pairs: int = 1 << 21,
                  max_cells: int = 1024, cells: GaussianCells | None = None
                  ) -> tuple[Tensor, Tensor]:
    """points [M, 3], unit view directions dirs [M, 3], Gaussians as in ``mixture_density``
    and their spherical-harmonics colours sh [N, K, 3] (K = (degree + 1)^2, colour =
    sh . basis(d) + 0.5, clamped at 0) -> (rgb [M, 3], density [M]); rgb is 0 where the
    density is 0. Not differentiable (a teacher's targets). ``cells`` as in
    ``mixture_density``."""
    m = len(points)
    if m == 0 or len(means) == 0:
        return points.new_zeros(m, 3), points.new_zeros(m)
    degree = int(round(sh.shape[1] ** 0.5)) - 1
    basis = sh_encode(dirs, degree + 1)  # [M, K]
    A = quat_to_rotmat(quats).transpose(1, 2) / scales[:, :, None]
    radius = CUTOFF * scales.max(1).values
    rgbs, sigmas = [], []
    cells = cells or index_gaussians(means, radius, max_cells)
    for s, e, pt, g in _pairs(points, cells, max_pairs):
        pt, g, w = _weights(points[s:e], means, A, radius, opacities, pt, g)
        color = (torch.einsum("pk,pkc->pc", basis[s:e].index_select(0, pt),
                              sh.index_select(0, g)) + 0.5).clamp_min(0)
        sigma = points.new_zeros(e - s).index_add(0, pt, w)
        rgb = points.new_zeros(e - s, 3).index_add(0, pt, w[:, None] * color)
        rgbs.append(rgb / sigma.clamp_min(1e-12)[:, None])
        sigmas.append(sigma)
    return torch.cat(rgbs), torch.cat(sigmas)
