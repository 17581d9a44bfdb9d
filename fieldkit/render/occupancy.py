"""Occupancy grid: a bitfield over an axis-aligned box for empty-space skipping.

The grid keeps an exponential moving average (EMA) of the density seen in each cell and
thresholds it into a boolean bitfield, as instant-ngp and nerfacc's ``OccGridEstimator`` do.
Cell ``(i, j, k)`` covers ``aabb_min + [i, i+1) x [j, j+1) x [k, k+1) * cell_size``, with
``i`` along x; the flat index of a cell is ``(i * R + j) * R + k``.

All state lives in registered buffers (``aabb``, ``density``, ``binary``), so
``state_dict()`` round-trips through ``safetensors.torch.save_file`` / ``load_file``.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EVAL_CHUNK = 1 << 16
"""Points per call of the density function during :meth:`OccupancyGrid.update`."""


class OccupancyGrid(nn.Module):
    """Bitfield over an axis-aligned box, from an EMA of density (instant-ngp / nerfacc).

    Buffers:
        aabb: [6] float (xmin, ymin, zmin, xmax, ymax, zmax).
        density: [R^3] float EMA of the density per cell (flat index ``(i*R + j)*R + k``).
        binary: [R, R, R] bool occupancy; all True at start, so nothing is skipped before the
            first update.
    """

    aabb: Tensor
    density: Tensor
    binary: Tensor

    def __init__(self, aabb: Tensor | list[float], resolution: int = 128) -> None:
        """aabb: [6] (xmin, ymin, zmin, xmax, ymax, zmax); resolution: cells per axis."""
        super().__init__()
        aabb = torch.as_tensor(aabb, dtype=torch.float32).reshape(6).clone()
        if not bool((aabb[3:] > aabb[:3]).all()):
            raise ValueError(f"aabb must have max > min on every axis, got {aabb.tolist()}")
        if resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {resolution}")
        self.resolution = int(resolution)
        r = self.resolution
        self.register_buffer("aabb", aabb)
        self.register_buffer("density", torch.zeros(r**3))
        self.register_buffer("binary", torch.ones(r, r, r, dtype=torch.bool))

    @property
    def num_cells(self) -> int:
        return self.resolution**3

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, aabb={[round(v, 4) for v in self.aabb.tolist()]}"

    # ------------------------------------------------------------------ geometry
    def cell_coords(self, indices: Tensor) -> Tensor:
        """[M] int64 flat cell indices -> [M, 3] int64 (i, j, k) grid coordinates."""
        r = self.resolution
        return torch.stack([indices // (r * r), (indices // r) % r, indices % r], -1)

    def cell_points(self, indices: Tensor, jitter: bool = True) -> Tensor:
        """[M] flat cell indices -> [M, 3] points: uniform in each cell, or its centre."""
        coords = self.cell_coords(indices).to(self.aabb.dtype)
        offset = torch.rand_like(coords) if jitter else torch.full_like(coords, 0.5)
        lo, hi = self.aabb[:3], self.aabb[3:]
        return lo + (coords + offset) / self.resolution * (hi - lo)

    @torch.no_grad()
    def occupied_at(self, points: Tensor) -> Tensor:
        """[N, 3] points -> [N] bool: inside the box and in an occupied cell (False outside)."""
        lo, hi = self.aabb[:3].to(points), self.aabb[3:].to(points)
        u = (points - lo) / (hi - lo)
        inside = ((u >= 0) & (u <= 1)).all(-1)
        r = self.resolution
        # u >= 0 inside the box, so truncation is floor there; outside (or NaN) any index in
        # range will do, since `inside` masks it.
        ijk = (u * r).long().clamp_(0, r - 1)
        flat = (ijk[:, 0] * r + ijk[:, 1]) * r + ijk[:, 2]
        return self.binary.reshape(-1).index_select(0, flat) & inside

    @torch.no_grad()
    def dilated(self, k: int) -> Tensor:
        """[R**3] bool, flat like ``binary``: cells with an occupied cell within k cells per
        axis (a separable max filter; cached until ``binary`` changes)."""
        stamp = (self.binary.data_ptr(), self.binary._version)
        if self.__dict__.get("_dilated_stamp") != stamp:   # binary changed: start afresh
            self.__dict__.update(_dilated_stamp=stamp, _dilated_cache={})
        cache = self.__dict__["_dilated_cache"]
        if k not in cache:
            occ = self.binary.float()[None, None]
            for axis in range(3):
                size, pad = [1, 1, 1], [0, 0, 0]
                size[axis], pad[axis] = 2 * k + 1, k
                occ = F.max_pool3d(occ, tuple(size), stride=1, padding=tuple(pad))
            cache[k] = occ.reshape(-1).bool()
        return cache[k]

    # ------------------------------------------------------------------ update
    @torch.no_grad()
    def update(
        self,
        step: int,
        density_fn: Callable[[Tensor], Tensor],
        *,
        occ_thre: float = 0.01,
        ema_decay: float = 0.95,
        warmup_steps: int = 256,
        n: int = 16,
    ) -> None:
        """Refresh the grid from ``density_fn`` ([N, 3] points -> [N] or [N, 1] density).

        Call it every training step; it acts when ``step % n == 0``. Before ``warmup_steps``
        every cell is evaluated; afterwards a random quarter of all cells plus (up to) a quarter
        of the cells count drawn from the occupied ones, as nerfacc does. One jittered point is
        drawn in each chosen cell; the EMA is ``density = max(density * ema_decay, new)`` for
        those cells, and ``binary = density > min(mean(density), occ_thre)``.
        """
        if n < 1 or step % n != 0:
            return
        cells = self.num_cells
        device = self.density.device
        if step < warmup_steps:
            indices = torch.arange(cells, device=device)
        else:
            quarter = max(cells // 4, 1)
            uniform = torch.randint(cells, (quarter,), device=device)
            occupied = torch.nonzero(self.binary.reshape(-1))[:, 0]
            if occupied.numel() > quarter:
                occupied = occupied[torch.randint(occupied.numel(), (quarter,), device=device)]
            indices = torch.cat([uniform, occupied])
        points = self.cell_points(indices, jitter=True)
        new = torch.cat([density_fn(chunk).reshape(-1).to(self.density.dtype)
                         for chunk in points.split(EVAL_CHUNK)])
        new = torch.nan_to_num(new, nan=0.0, posinf=torch.finfo(new.dtype).max)
        # Decay each chosen cell once (repeated indices write the same value), then take the
        # max with every new sample of that cell: deterministic even with repeated indices.
        ema = self.density.clone()
        ema[indices] = self.density[indices] * ema_decay
        ema.scatter_reduce_(0, indices, new, reduce="amax", include_self=True)
        self.density.copy_(ema)
        threshold = torch.clamp(self.density.mean(), max=occ_thre)
        self.binary.copy_((self.density > threshold).reshape(self.binary.shape))
