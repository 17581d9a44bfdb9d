"""Cone stepping: ray marching whose step grows with distance (instant-ngp, nerfacc's
``cone_angle``), for unbounded real captures (pure PyTorch, vectorised).

A ray's step at distance t is ``dt(t) = clamp(t * cone_angle, step_size, max_step)``: fine
steps near the camera, where a pixel covers little, and steps that keep a constant angle further
out. Marching from ``t0`` the lattice has three regimes, each in closed form, so every ray's
candidates are generated at once without a sequential loop:

- uniform, ``t_k = t0 + k * step_size``, while ``t < step_size / cone_angle``;
- geometric, ``t_{k+1} = t_k * (1 + cone_angle)``, while ``t < max_step / cone_angle``;
- uniform again, ``t_{k+1} = t_k + max_step``.

Interval k is ``[t_k, min(t_{k+1}, t1)]``; both ends come from the same formula, so intervals
tile the ray exactly. With ``cone_angle = 0`` the lattice is ``volume.march``'s. Samples are
then filtered as ``volume.march`` does: occupancy at the midpoint (cascaded grids included),
``max_samples_per_ray``, early stop and ``alpha_thre``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from fieldkit.render.occupancy import OccupancyGrid
from fieldkit.render.volume import (_STEP_TOL, MAX_CANDIDATES, RaySamples, SigmaFn,
                                    every_step, filter_samples, pack, ray_aabb, ray_chunks)


class ConeLattice:
    """Per-ray closed form of the cone-stepping lattice (see the module docstring)."""

    def __init__(self, t0: Tensor, t1: Tensor, step_size: float, cone_angle: float,
                 max_step: float) -> None:
        """t0, t1: [R] start and end of each ray's march (t1 <= t0: no steps)."""
        if step_size <= 0 or cone_angle < 0 or max_step < step_size:
            raise ValueError(f"need step_size > 0, cone_angle >= 0 and max_step >= step_size, "
                             f"got {step_size}, {cone_angle}, {max_step}")
        self.t0, self.step, self.max_step = t0, float(step_size), float(max_step)
        self.log_ratio = math.log1p(cone_angle)
        inf = float("inf")
        t_a = self.step / cone_angle if cone_angle > 0 else inf     # end of the fine steps
        t_b = self.max_step / cone_angle if cone_angle > 0 else inf  # start of the coarse steps

        def count(span: Tensor, unit: float) -> Tensor:
            n = torch.ceil(span / unit - _STEP_TOL)
            return torch.where(span > 0, n, torch.zeros_like(n)).clamp_min(0).long()

        self.n_a = count(torch.minimum(t1, t0.new_tensor(t_a)) - t0, self.step)
        self.u0 = t0 + self.n_a.to(t0.dtype) * self.step
        if cone_angle > 0:
            end_b = torch.minimum(t1, t0.new_tensor(t_b))
            ratio = torch.log(end_b / self.u0.clamp_min(1e-30)) / self.log_ratio
            self.n_b = count(torch.where(end_b > self.u0, ratio, torch.zeros_like(ratio)), 1.0)
        else:
            self.n_b = torch.zeros_like(self.n_a)
        self.v0 = self._geometric(self.u0, self.n_b)
        self.n_c = count(t1 - self.v0, self.max_step)
        self.t1 = t1
        self.counts = self.n_a + self.n_b + self.n_c
        """[R] steps of each ray."""

    def _geometric(self, u0: Tensor, j: Tensor) -> Tensor:
        return u0 * torch.exp(j.to(u0.dtype) * self.log_ratio)

    def at(self, ray: Tensor, k: Tensor) -> Tensor:
        """[S] ray and step index (0 <= k <= count) -> [S] ``t_k``."""
        n_a, n_b = self.n_a.index_select(0, ray), self.n_b.index_select(0, ray)
        t_a = self.t0.index_select(0, ray) + k.to(self.t0.dtype) * self.step
        t_b = self._geometric(self.u0.index_select(0, ray), (k - n_a).clamp_min(0))
        t_c = self.v0.index_select(0, ray) + (k - n_a - n_b).clamp_min(0).to(t_a.dtype) \
            * self.max_step
        return torch.where(k <= n_a, t_a, torch.where(k <= n_a + n_b, t_b, t_c))

    def intervals(self, ray: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """[S] ray and step index -> [S] t_starts, [S] t_ends of interval k."""
        return self.at(ray, k), torch.minimum(self.at(ray, k + 1), self.t1.index_select(0, ray))


@torch.no_grad()
def march_cone(
    origins: Tensor,
    dirs: Tensor,
    grid: OccupancyGrid | None,
    *,
    near: float = 0.0,
    far: float = 1e10,
    step_size: float,
    cone_angle: float,
    max_step: float = 1e10,
    aabb: Tensor,
    sigma_fn: SigmaFn | None = None,
    early_stop_eps: float = 1e-4,
    alpha_thre: float = 0.0,
    stratified: bool = False,
    max_samples_per_ray: int | None = None,
    max_candidates: int = MAX_CANDIDATES,
) -> RaySamples:
    """Ray marching with steps ``clamp(t * cone_angle, step_size, max_step)`` and the filters
    of ``volume.march`` (whose arguments the others are). ``stratified`` jitters each ray's
    start by U[0, 1) * step_size. Every candidate's midpoint is tested against ``grid`` (no
    coarse skipping).

    Returns:
        RaySamples with S kept samples, without grad (re-evaluate the field with grad).
    """
    n_rays = origins.shape[0]
    t_near, t_far = ray_aabb(origins, dirs, aabb)
    t_near, t_far = t_near.clamp_min(near), t_far.clamp_max(far)
    if stratified:
        t_near = t_near + torch.rand_like(t_near) * step_size
    lattice = ConeLattice(t_near, t_far, step_size, cone_angle, max_step)
    steps = lattice.counts
    pieces = []
    for i0, i1, total in ray_chunks(steps, max_candidates):
        local, k = every_step(steps[i0:i1], total)
        t_starts, t_ends = lattice.intervals(local + i0, k)
        pieces.append(filter_samples(origins, dirs, grid, local, i0, i1 - i0, t_starts, t_ends,
                                     sigma_fn, early_stop_eps, alpha_thre, max_samples_per_ray))
    return pack(pieces, origins, n_rays)
