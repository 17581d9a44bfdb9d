"""Losses on packed ray samples: mip-NeRF 360's distortion loss, in contracted space.

The distortion loss of one ray with weights w_i on intervals [t0_i, t1_i] (midpoints m_i) is

    L = sum_i sum_j w_i w_j |m_i - m_j|  +  1/3 sum_i w_i^2 (t1_i - t0_i)

(Barron et al. 2022, eq. 15). It is small when a ray's weight sits in one short stretch, so it
removes the semi-transparent fog a field otherwise spreads along rays in empty space, which
also lets the occupancy grid cull those cells. Computed here in O(S) with per-ray exclusive
prefix sums over the packed samples (sorted by ray, then by t).

Training measures the distances as mip-NeRF 360 does, after its contraction of space
(``contract``, ``contracted_intervals``): box units inside the unit ball, the region of
interest, with the background beyond squeezed into the shell out to radius 2. It is opt-in
(``TrainConfig.distortion_weight``): it helped fox and cost beer-colmap 2.4 dB, where the field
painted the views on floaters near the cameras (apps/results/distortion_cpu/bench.md).
"""
from __future__ import annotations

import torch
from torch import Tensor

from fieldkit.render.composite import exclusive_per_ray, segment_first


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
    w_before = exclusive_per_ray(weights, first)            # sum_{j<i} w_j
    wm_before = exclusive_per_ray(weights * mid, first)     # sum_{j<i} w_j m_j
    # sum_{i,j} w_i w_j |m_i - m_j| = 2 sum_i w_i (m_i sum_{j<i} w_j - sum_{j<i} w_j m_j)
    inter = 2.0 * weights * (mid * w_before - wm_before)
    intra = weights.square() * (t_ends - t_starts) / 3.0
    out = weights.new_zeros(n_rays)
    return out.index_add(0, ray_indices, inter + intra)


def distortion_loss(weights: Tensor, t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor,
                    n_rays: int) -> Tensor:
    """Mean over the R rays of ``distortion_per_ray`` (a scalar)."""
    return distortion_per_ray(weights, t_starts, t_ends, ray_indices, n_rays).mean()


def contract(x: Tensor) -> Tensor:
    """mip-NeRF 360's contraction of box coordinates [..., 3]: the identity inside the unit
    ball, |x| -> 2 - 1/|x| outside it (everything lands within radius 2)."""
    n = x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.where(n <= 1, x, (2 - 1 / n) * (x / n))


def contracted_intervals(origins: Tensor, dirs: Tensor, t_starts: Tensor, t_ends: Tensor,
                         ray_indices: Tensor, n_rays: int) -> tuple[Tensor, Tensor]:
    """Packed sample intervals [S] re-measured along their rays in contracted space.

    Every interval, and every gap between two of a ray's samples (empty space the marcher
    skipped), counts as the straight distance between its contracted end points; a ray's
    positions are the running sum of those lengths from its first sample. Returns (s_starts,
    s_ends) [S], increasing along each ray, equal to t - t_first inside the unit ball.

    Args:
        origins, dirs: [R, 3] rays in box units. t_starts, t_ends, ray_indices: [S] packed
            samples (sorted by ray, then t). n_rays: R.
    """
    if ray_indices.numel() == 0:
        return t_starts, t_ends
    o, d = origins[ray_indices], dirs[ray_indices]
    a = contract(o + d * t_starts[:, None])
    b = contract(o + d * t_ends[:, None])
    width = (b - a).norm(dim=-1)
    first = segment_first(ray_indices, n_rays)
    is_first = first == torch.arange(len(first), device=first.device)
    gap = (a - torch.roll(b, 1, 0)).norm(dim=-1).masked_fill(is_first, 0.0)
    ends = exclusive_per_ray(gap + width, first) + gap + width
    return ends - width, ends
