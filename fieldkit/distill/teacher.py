"""The teacher side of distillation: what a trained model of any kind can be asked.

Only the representation protocol is used (``render``, ``density``), plus the volumetric models'
field and occupancy grid when they have them:
- renders of whole views (every kind) and of single rays (volumetric kinds), over black, so that
  the colour is premultiplied and any background can be composited later;
- density (and, for fields, view-dependent colour) at 3D points;
- points where the teacher has mass (its occupancy grid, or its Gaussians);
- an occupancy density per cell, to start a volumetric student's grid from.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from fieldkit.data.cameras import Cameras
from fieldkit.splats.mixture import (CUTOFF, GaussianCells, index_gaussians, mixture_density,
                                     mixture_field)
from fieldkit.splats.transform import quat_to_rotmat

RAY_CHUNK = 1 << 14
"""Rays per teacher render call (bounds memory)."""
POINT_CHUNK = 1 << 16
"""Points per teacher field call (splat mixtures bound their memory by pairs themselves)."""


class Teacher:
    """A trained model of any registered kind, frozen, asked for distillation targets."""

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval().requires_grad_(False)
        self.kind = model.kind
        self.is_splat = self.kind == "splat"
        self.device = next(model.parameters()).device
        self.black = torch.zeros(3, device=self.device)
        self._cells: GaussianCells | None = None

    # ------------------------------------------------------------------ renders
    @torch.no_grad()
    def render_view(self, camera: Cameras) -> dict[str, Tensor]:
        """Camera 0 over black: rgb [H, W, 3] (premultiplied), depth [H, W, 1], alpha
        [H, W, 1], on the CPU."""
        out = self.model.render(camera[0].to(self.device), self.black)
        return {k: out[k].float().cpu() for k in ("rgb", "depth", "alpha")}

    @torch.no_grad()
    def render_rays(self, origins: Tensor, dirs: Tensor) -> dict[str, Tensor]:
        """Volumetric teachers only: rays [R, 3] (box units) over black -> rgb [R, 3]
        (premultiplied), depth [R, 1], alpha [R, 1], on the CPU."""
        out: dict[str, list[Tensor]] = {"rgb": [], "depth": [], "alpha": []}
        for o, d in zip(origins.split(RAY_CHUNK), dirs.split(RAY_CHUNK)):
            res = self.model.render_rays(o.to(self.device), d.to(self.device), self.black)
            for k in out:
                out[k].append(res[k].float().cpu())
        return {k: torch.cat(v) for k, v in out.items()}

    # ------------------------------------------------------------------ points
    @torch.no_grad()
    def query(self, points: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
        """points, unit dirs [P, 3] on the teacher's device -> (rgb [P, 3], density [P]).
        Splats: the volume their mixture makes (``splat_field``)."""
        if self.is_splat:
            return self.splat_field(points, dirs)
        rgbs, sigmas = [], []
        for p, d in zip(points.split(POINT_CHUNK), dirs.split(POINT_CHUNK)):
            rgb, sigma = self.model.field(p, d)
            rgbs.append(rgb)
            sigmas.append(sigma)
        return torch.cat(rgbs), torch.cat(sigmas)

    def splat_field(self, points: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
        """points, unit dirs [P, 3] -> (rgb [P, 3], density [P]) of the volume the Gaussians
        make: each one's peak density is set so that a ray through its centre along its
        thinnest axis gets the Gaussian's opacity o (integral = -log(1 - o)), the density a
        volume renderer needs to draw the same image (``SplatModel.density`` peaks at o, a
        shape for iso-surfaces, not a volume density); the colour is the density-weighted
        mean of the Gaussians' colours seen along ``dirs`` (``mixture_field``). Splats trained
        in the antialiased mode take o unscaled too: their filter keeps each Gaussian's weight
        in the image, and their volume covers what their raster does
        (apps/results/splat_to_field_cpu, mean alpha within 0.005 on lego)."""
        p = self.model.params
        return mixture_field(points, dirs, p["means"], p["quats"], p["scales"].exp(),
                             self.splat_peaks(), self.model.sh_coeffs(), cells=self.cells())

    def cells(self) -> GaussianCells:
        """The Gaussians' cells for mixture queries, registered once (the teacher is frozen;
        2.3M Gaussians take ~9 s to register here)."""
        if self._cells is None:
            p = self.model.params
            self._cells = index_gaussians(p["means"], CUTOFF * p["scales"].exp().max(1).values)
        return self._cells

    def splat_peaks(self) -> Tensor:
        """[N] volumetric peak density of each Gaussian (see ``splat_field``)."""
        p = self.model.params
        o = torch.sigmoid(p["opacities"]).clamp(max=0.999)
        thinnest = p["scales"].exp().min(1).values.clamp_min(1e-6)
        return -torch.log1p(-o) / (math.sqrt(2 * math.pi) * thinnest)

    @torch.no_grad()
    def mass_points(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """[n, 3] box points where the teacher has mass: uniform in occupied grid cells (fields),
        or drawn from the Gaussians in proportion to their opacity (splats)."""
        if self.is_splat:
            p = self.model.params
            weight = torch.sigmoid(p["opacities"]).float().cpu()
            idx = torch.multinomial(weight.clamp_min(1e-8), n, replacement=True,
                                    generator=generator).to(self.device)
            eps = torch.randn(n, 3, generator=generator).to(self.device)
            rot = quat_to_rotmat(p["quats"][idx])
            return p["means"][idx] + torch.einsum("nij,nj->ni", rot, eps * p["scales"][idx].exp())
        grid = self.model.grid
        occupied = torch.nonzero(grid.binary.reshape(-1) & grid.looked_up())[:, 0]
        if occupied.numel() == 0:
            occupied = torch.arange(grid.num_cells, device=grid.binary.device)
        pick = occupied[torch.randint(len(occupied), (n,), generator=generator).to(
            occupied.device)]
        jitter = torch.rand(n, 3, generator=generator).to(grid.aabb)
        return grid.cell_points(pick, offset=jitter)

    @torch.no_grad()
    def cell_density(self, grid) -> Tensor:
        """[R^3] teacher density at the centres of ``grid``'s cells (flat cell order)."""
        if not self.is_splat and self.model.grid.same_layout(grid):
            # The teacher's own running estimate already covers every cell.
            step = self.model.config.render.step_size
            return self.model.grid.density / step
        pts = grid.cell_points(torch.arange(grid.num_cells, device=grid.aabb.device),
                               jitter=False).to(self.device)
        if self.is_splat:
            p = self.model.params
            sigma = mixture_density(pts, p["means"], p["quats"], p["scales"].exp(),
                                    self.splat_peaks(), cells=self.cells())
        else:
            _, sigma = self.query(pts, torch.zeros_like(pts) + torch.tensor(
                [0.0, 0.0, 1.0], device=self.device))
        sigma = sigma.float()
        if self.is_splat:
            # Gaussians thinner than a cell can miss its centre: every cell holding a Gaussian's
            # centre gets that Gaussian's peak, and occupancy spreads to the neighbours. A cell
            # wrongly empty would never be sampled, so the student could never fill it.
            p = self.model.params
            lo, hi, r = grid.aabb[:3].to(self.device), grid.aabb[3:].to(self.device), \
                grid.resolution
            ijk = ((p["means"] - lo) / (hi - lo) * r).floor().long()
            inside = ((ijk >= 0) & (ijk < r)).all(-1)
            flat = (ijk[:, 0] * r + ijk[:, 1]) * r + ijk[:, 2]
            sigma = sigma.scatter_reduce(0, flat[inside], self.splat_peaks()[inside].float(),
                                         reduce="amax")
            sigma = torch.nn.functional.max_pool3d(sigma.reshape(1, 1, r, r, r), 3, stride=1,
                                                   padding=1).reshape(-1)
        return sigma
