"""Losses on packed ray samples: mip-NeRF 360's distortion loss.

The distortion loss of one ray with weights w_i on intervals [t0_i, t1_i] (midpoints m_i) is

    L = sum_i sum_j w_i w_j |m_i - m_j|  +  1/3 sum_i w_i^2 (t1_i - t0_i)

(Barron et al. 2022, eq. 15). It is small when a ray's weight sits in one short stretch, so it
removes the semi-transparent fog a field otherwise spreads along rays in empty space, which
also lets the occupancy grid cull those cells. Computed here in O(S) with per-ray exclusive
prefix sums over the packed samples (sorted by ray, then by t).
"""
from __future__ import annotations

import torch
from torch import Tensor

from fieldkit.render.composite import _scan_dtype, segment_first


def _exclusive_per_ray(x: Tensor, first: Tensor) -> Tensor:
    """[S] -> [S] sum of x over the earlier samples of the same ray (first: ``segment_first``)."""
    x64 = x.to(_scan_dtype(x))
    exclusive = torch.cumsum(x64, 0) - x64
    return (exclusive - exclusive[first]).to(x.dtype)


def distortion_per_ray(weights: Tensor, t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor,
                       n_rays: int) -> Tensor:
    """[R] distortion loss of each ray (0 for rays without samples).

    Args:
        weights: [S] volume-rendering weights. t_starts, t_ends: [S] interval bounds (box
            units). ray_indices: [S] int64 sorted ascending, samples of a ray in t order.
            n_rays: R.
    """
    if ray_indices.numel() == 0:
        return weights.new_zeros(n_rays)
    mid = 0.5 * (t_starts + t_ends)
    first = segment_first(ray_indices, n_rays)
    w_before = _exclusive_per_ray(weights, first)            # sum_{j<i} w_j
    wm_before = _exclusive_per_ray(weights * mid, first)     # sum_{j<i} w_j m_j
    # sum_{i,j} w_i w_j |m_i - m_j| = 2 sum_i w_i (m_i sum_{j<i} w_j - sum_{j<i} w_j m_j)
    inter = 2.0 * weights * (mid * w_before - wm_before)
    intra = weights.square() * (t_ends - t_starts) / 3.0
    out = weights.new_zeros(n_rays)
    return out.index_add(0, ray_indices, inter + intra)


def distortion_loss(weights: Tensor, t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor,
                    n_rays: int) -> Tensor:
    """Mean over the R rays of ``distortion_per_ray`` (a scalar)."""
    return distortion_per_ray(weights, t_starts, t_ends, ray_indices, n_rays).mean()
