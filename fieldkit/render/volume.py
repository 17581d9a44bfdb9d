"""Ray marching into packed samples (nerfacc style, pure PyTorch, vectorised).

Rays are ``x(t) = origin + t * dir``; ``t`` is measured in units of ``|dir|`` (pass unit
directions to get metric distances and step sizes). ``march`` takes uniform steps between each
ray's entry into and exit from the box, drops samples in empty cells of an ``OccupancyGrid``,
optionally prunes samples hidden behind opaque matter (``sigma_fn``), and returns them packed
(see ``RaySamples``). Compositing lives in ``fieldkit.render.composite`` and is re-exported
here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from fieldkit.render.composite import (accumulate, render_dense, render_rays,  # noqa: F401
                                       render_weights, segment_first)
from fieldkit.render.occupancy import OccupancyGrid

SigmaFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""(t_starts [S], t_ends [S], ray_indices [S]) -> sigmas [S]."""

MAX_CANDIDATES = 1 << 22
"""Default bound on candidate samples generated at once by ``march`` (memory bound)."""

_STEP_TOL = 1e-4
"""A ray's last interval is dropped when shorter than this fraction of a step (float noise)."""


def ray_aabb(origins: Tensor, dirs: Tensor, aabb: Tensor) -> tuple[Tensor, Tensor]:
    """Slab test of rays against an axis-aligned box.

    Args:
        origins, dirs: [R, 3] (dirs need not be unit; components may be 0).
        aabb: [6] (xmin, ymin, zmin, xmax, ymax, zmax); the box is closed.
    Returns:
        t_near [R] (clamped to >= 0, so rays starting inside get 0), t_far [R]. Rays that miss
        the box (or have it behind them) get ``t_near >= t_far``; values may be +-inf for rays
        parallel to a slab they lie outside of.
    """
    aabb = torch.as_tensor(aabb).to(origins)
    lo, hi = aabb[:3], aabb[3:]
    parallel = dirs == 0
    safe = torch.where(parallel, torch.ones_like(dirs), dirs)
    t0, t1 = (lo - origins) / safe, (hi - origins) / safe
    tmin, tmax = torch.minimum(t0, t1), torch.maximum(t0, t1)
    inside = (origins >= lo) & (origins <= hi)
    inf = torch.full_like(tmin, float("inf"))
    tmin = torch.where(parallel, torch.where(inside, -inf, inf), tmin)
    tmax = torch.where(parallel, torch.where(inside, inf, -inf), tmax)
    return tmin.amax(-1).clamp_min(0.0), tmax.amin(-1)


@dataclass
class RaySamples:
    """Packed samples of R rays (S samples in all), grouped by ray."""

    ray_indices: Tensor
    """[S] int64 ray of each sample, sorted ascending."""
    t_starts: Tensor
    """[S] start of each sample's interval along its ray."""
    t_ends: Tensor
    """[S] end of each sample's interval (t_ends > t_starts)."""
    packed_info: Tensor
    """[R, 2] int64 (start, count) of each ray's samples in the packed arrays."""

    def __len__(self) -> int:
        return self.ray_indices.shape[0]

    @property
    def t_mids(self) -> Tensor:
        """[S] interval midpoints."""
        return 0.5 * (self.t_starts + self.t_ends)


def midpoints(origins: Tensor, dirs: Tensor, t_starts: Tensor, t_ends: Tensor,
              ray_indices: Tensor) -> Tensor:
    """[R, 3] origins/dirs, [S] t_starts/t_ends/ray_indices -> [S, 3] interval midpoints."""
    t = (0.5 * (t_starts + t_ends))[:, None]
    return origins.index_select(0, ray_indices) + dirs.index_select(0, ray_indices) * t


def packed_info_from(ray_indices: Tensor, n_rays: int) -> Tensor:
    """[S] sorted ray indices -> [n_rays, 2] int64 (start, count)."""
    counts = torch.bincount(ray_indices, minlength=n_rays)
    return torch.stack([torch.cumsum(counts, 0) - counts, counts], -1)


SKIP_RADII = (4, 1)
"""Levels of empty-space skipping before the per-sample occupancy test, coarse to fine: a level
of radius k tests segments of up to 2k cells' length against the grid dilated by k cells."""


def _rank_in_ray(local: Tensor, n_rays: int) -> Tensor:
    """[S] sorted (chunk-local) ray indices -> [S] position of each sample within its ray."""
    return torch.arange(local.shape[0], device=local.device) - segment_first(local, n_rays)


def _split(local: Tensor, first: Tensor, n: Tensor, f: int) -> tuple[Tensor, Tensor, Tensor]:
    """Segments (ray [M], first step [M], steps [M]) -> the same steps cut into segments of at
    most f steps, in the same order."""
    parts = (n + f - 1) // f
    owner = torch.repeat_interleave(torch.arange(len(n), device=n.device), parts)
    j = torch.arange(len(owner), device=n.device) - (torch.cumsum(parts, 0) - parts)[owner]
    start = j * f
    return local[owner], first[owner] + start, torch.clamp(n[owner] - start, max=f)


@torch.no_grad()
def march(
    origins: Tensor,
    dirs: Tensor,
    grid: OccupancyGrid | None,
    *,
    near: float = 0.0,
    far: float = 1e10,
    step_size: float,
    aabb: Tensor,
    sigma_fn: SigmaFn | None = None,
    early_stop_eps: float = 1e-4,
    alpha_thre: float = 0.0,
    stratified: bool = False,
    max_samples_per_ray: int | None = None,
    max_candidates: int = MAX_CANDIDATES,
) -> RaySamples:
    """Uniform ray marching with empty-space skipping and optional early stop.

    Each ray is stepped from ``t0 = max(t_near, near)`` (plus a random fraction of a step when
    ``stratified``) to ``t1 = min(t_far, far)``, where (t_near, t_far) is its span inside
    ``aabb``: interval k is ``[t0 + k*step, min(t0 + (k+1)*step, t1)]``,
    ``k < ceil((t1 - t0) / step)``. A sample is kept when its midpoint is in an occupied cell
    of ``grid`` (all kept when ``grid`` is None; points outside the grid's box are empty).

    Args:
        origins, dirs: [R, 3]. grid: occupancy grid or None. near, far: clip of t.
        step_size: step in t units. aabb: [6] box to march through.
        sigma_fn: (t_starts [S], t_ends [S], ray_indices [S]) -> sigmas [S]; when given, it is
            evaluated (without grad) and samples with transmittance < ``early_stop_eps`` before
            them, or (if ``alpha_thre > 0``) with alpha < ``alpha_thre``, are dropped.
        stratified: jitter each ray's start by U[0, 1) * step (training).
        max_samples_per_ray: keep at most the first this many samples of each ray (applied
            after occupancy, before ``sigma_fn``).
        max_candidates: candidate samples generated at once; rays are processed in chunks so
            that a chunk stays under it (a single longer ray forms its own chunk).
    Returns:
        RaySamples with S kept samples, without grad (re-evaluate the field with grad).
    """
    if step_size <= 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    n_rays = origins.shape[0]
    t_near, t_far = ray_aabb(origins, dirs, aabb)
    t_near, t_far = t_near.clamp_min(near), t_far.clamp_max(far)
    if stratified:
        t_near = t_near + torch.rand_like(t_near) * step_size
    span = t_far - t_near
    steps = torch.where(span > 0, torch.ceil(span / step_size - _STEP_TOL), 0.0)
    steps = steps.clamp_min(0).long()
    pieces = [_march_chunk(origins, dirs, grid, t_near, t_far, steps, i0, i1, total, step_size,
                           sigma_fn, early_stop_eps, alpha_thre, max_samples_per_ray)
              for i0, i1, total in ray_chunks(steps, max_candidates)]
    return pack(pieces, origins, n_rays)


def every_step(counts: Tensor, total: int) -> tuple[Tensor, Tensor]:
    """[R] steps of each ray (``total`` in all) -> (local ray [total], step k [total]) of every
    step, in ray-then-k order."""
    device = counts.device
    local = torch.repeat_interleave(torch.arange(len(counts), device=device), counts,
                                    output_size=total)
    first = torch.cumsum(counts, 0) - counts
    return local, torch.arange(total, device=device) - first.index_select(0, local)


def ray_chunks(steps: Tensor, max_candidates: int) -> list[tuple[int, int, int]]:
    """[R] candidate count of each ray -> (i0, i1, total) runs of consecutive rays with at most
    ``max_candidates`` candidates in all (a single longer ray forms its own run); runs without
    candidates are left out."""
    cum = torch.cumsum(steps, 0).cpu()
    n_rays, out, i0 = len(steps), [], 0
    while i0 < n_rays:
        base = int(cum[i0 - 1]) if i0 > 0 else 0
        i1 = int(torch.searchsorted(cum, torch.tensor(base + max_candidates), right=True))
        i1 = min(max(i1, i0 + 1), n_rays)
        total = int(cum[i1 - 1]) - base
        if total > 0:
            out.append((i0, i1, total))
        i0 = i1
    return out


def pack(pieces: list[tuple[Tensor, Tensor, Tensor]], origins: Tensor, n_rays: int
         ) -> RaySamples:
    """(ray_indices, t_starts, t_ends) of consecutive runs of rays -> RaySamples."""
    if pieces:
        ray_indices, t_starts, t_ends = (torch.cat(p) for p in zip(*pieces))
    else:
        ray_indices = torch.zeros(0, dtype=torch.long, device=origins.device)
        t_starts = t_ends = origins.new_zeros(0)
    return RaySamples(ray_indices, t_starts, t_ends, packed_info_from(ray_indices, n_rays))


def _coarse_steps(origins: Tensor, dirs: Tensor, grid: OccupancyGrid | None, t_near: Tensor,
                  t_far: Tensor, counts: Tensor, i0: int, step_size: float,
                  radii: tuple[int, ...] | None = None) -> tuple[Tensor, Tensor] | None:
    """Hierarchical empty-space skipping: (local ray [C], step k [C]) of the fine steps that
    may hold an occupied midpoint, in ray-then-k order; None when not worth it.

    At a level of radius k, a segment of f steps spans at most 2k cells (f * step <= 2k *
    cell, unit directions), so every point of it lies within k cells, per axis, of its
    midpoint's cell. The segment is kept when that cell of the grid dilated by k cells is
    occupied; kept segments are cut for the next level. Every fine step whose midpoint is in an
    occupied cell survives: the result equals the one-level march exactly, with a fraction of
    the candidates.
    """
    if grid is None or grid.levels > 1:
        return None
    r = grid.resolution
    lo, hi = grid.aabb[:3].to(t_near), grid.aabb[3:].to(t_near)
    cell = float(((hi - lo) / r).min())
    # 0.999: the 2k-cell bound holds with a margin for the rounding of midpoints
    levels = [(k, int(0.999 * 2 * k * cell / step_size)) for k in (radii or SKIP_RADII)]
    levels = [(k, f) for k, f in levels if f >= 2]
    if not levels:
        return None
    n_local = len(counts)
    i1 = i0 + n_local
    # the chunk's rays in grid units, (origin, dir) side by side: one gather per segment
    rays = torch.cat([(origins[i0:i1] - lo) / (hi - lo) * r, dirs[i0:i1] / (hi - lo) * r], 1)
    t_lo, t_hi = t_near[i0:i1], t_far[i0:i1]
    local = torch.arange(n_local, device=origins.device)
    first, n = torch.zeros_like(counts), counts
    for k, f in levels:
        local, first, n = _split(local, first, n, f)
        t0 = t_lo.index_select(0, local) + first.to(t_lo.dtype) * step_size
        t1 = torch.minimum(t0 + n.to(t0.dtype) * step_size, t_hi.index_select(0, local))
        g = rays.index_select(0, local)
        ijk = torch.addcmul(g[:, :3], g[:, 3:], (0.5 * (t0 + t1))[:, None]).long().clamp_(0, r - 1)
        keep = grid.dilated(k)[(ijk[:, 0] * r + ijk[:, 1]) * r + ijk[:, 2]]
        keep = torch.nonzero(keep)[:, 0]
        local, first, n = local[keep], first[keep], n[keep]
    local, k_first, _ = _split(local, first, n, 1)
    return local, k_first


def _march_chunk(
    origins: Tensor, dirs: Tensor, grid: OccupancyGrid | None, t_near: Tensor, t_far: Tensor,
    steps: Tensor, i0: int, i1: int, total: int, step_size: float, sigma_fn: SigmaFn | None,
    early_stop_eps: float, alpha_thre: float, max_samples_per_ray: int | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Candidates, occupancy mask and pruning for rays i0..i1-1 -> (ray_indices, t0s, t1s)."""
    n_local = i1 - i0
    counts = steps[i0:i1]
    coarse = _coarse_steps(origins, dirs, grid, t_near, t_far, counts, i0, step_size)
    if coarse is not None:  # only the fine steps of coarse segments near occupied space
        local, k = coarse
    else:
        local, k = every_step(counts, total)
    ray = local + i0
    t_starts = t_near.index_select(0, ray) + k.to(t_near.dtype) * step_size
    t_ends = torch.minimum(t_starts + step_size, t_far.index_select(0, ray))
    return filter_samples(origins, dirs, grid, local, i0, n_local, t_starts, t_ends, sigma_fn,
                          early_stop_eps, alpha_thre, max_samples_per_ray)


def filter_samples(
    origins: Tensor, dirs: Tensor, grid: OccupancyGrid | None, local: Tensor, i0: int,
    n_local: int, t_starts: Tensor, t_ends: Tensor, sigma_fn: SigmaFn | None,
    early_stop_eps: float, alpha_thre: float, max_samples_per_ray: int | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Candidate samples of rays i0..i0+n_local-1 (``local`` [S] sorted ray - i0, t_starts and
    t_ends [S]) -> (ray_indices, t_starts, t_ends) of those in occupied cells, within
    ``max_samples_per_ray``, and (``sigma_fn``) before early stop and above ``alpha_thre``."""
    ray = local + i0

    def keep(mask: Tensor) -> None:
        nonlocal local, ray, t_starts, t_ends
        sel = torch.nonzero(mask)[:, 0]
        local, t_starts, t_ends = (x.index_select(0, sel) for x in (local, t_starts, t_ends))
        ray = local + i0

    if grid is not None:
        keep(grid.occupied_at(midpoints(origins, dirs, t_starts, t_ends, ray)))
    if max_samples_per_ray is not None:
        keep(_rank_in_ray(local, n_local) < max_samples_per_ray)
    if sigma_fn is not None and ray.numel() > 0:
        sigmas = sigma_fn(t_starts, t_ends, ray).reshape(-1)
        _, trans, alphas = render_weights(sigmas, t_starts, t_ends, local, n_local)
        mask = trans >= early_stop_eps
        if alpha_thre > 0:
            mask &= alphas >= alpha_thre
        keep(mask)
    return ray, t_starts, t_ends
