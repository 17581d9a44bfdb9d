"""Occupancy grid: a bitfield over an axis-aligned box for empty-space skipping.

The grid keeps an exponential moving average (EMA) of the density seen in each cell and
thresholds it into a boolean bitfield, as instant-ngp and nerfacc's ``OccGridEstimator`` do.
Cell ``(i, j, k)`` covers ``aabb_min + [i, i+1) x [j, j+1) x [k, k+1) * cell_size``, with
``i`` along x; the flat index of a cell is ``(i * R + j) * R + k``.

Cascades (``levels > 1``, instant-ngp's and nerfacc's multi-level grid, for unbounded real
captures): level l covers the box grown 2^l times about its centre, with the same R^3 cells, so
cells double in size with each level. A point belongs to the finest level that contains it. The
flat index of cell (i, j, k) of level l is ``l * R^3 + (i * R + j) * R + k``; every level's
cells (also those a finer level covers) are updated, so level L-1 alone is a coarse grid of the
whole box.

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
        binary: [R, R, R] bool occupancy ([L, R, R, R] with L > 1 levels); all True at start,
            so nothing is skipped before the first update.
    """

    aabb: Tensor
    density: Tensor
    binary: Tensor

    def __init__(self, aabb: Tensor | list[float], resolution: int = 128, levels: int = 1
                 ) -> None:
        """aabb: [6] (xmin, ymin, zmin, xmax, ymax, zmax) of the finest level; resolution: cells
        per axis; levels: cascades, each twice the size of the last."""
        super().__init__()
        aabb = torch.as_tensor(aabb, dtype=torch.float32).reshape(6).clone()
        if not bool((aabb[3:] > aabb[:3]).all()):
            raise ValueError(f"aabb must have max > min on every axis, got {aabb.tolist()}")
        if resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {resolution}")
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        self.resolution, self.levels = int(resolution), int(levels)
        r = self.resolution
        self.register_buffer("aabb", aabb)
        self.register_buffer("density", torch.zeros(self.levels * r**3))
        shape = (r, r, r) if self.levels == 1 else (self.levels, r, r, r)
        self.register_buffer("binary", torch.ones(shape, dtype=torch.bool))

    @property
    def num_cells(self) -> int:
        return self.levels * self.resolution**3

    @property
    def level_aabbs(self) -> Tensor:
        """[L, 6] the box of each level (nerfacc's ``aabbs`` layout)."""
        lo, hi = self.aabb[:3], self.aabb[3:]
        c, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
        scale = (2.0 ** torch.arange(self.levels, device=lo.device, dtype=lo.dtype))[:, None]
        return torch.cat([c - half * scale, c + half * scale], -1)

    @property
    def level_binaries(self) -> Tensor:
        """[L, R, R, R] bool occupancy of each level (a view of ``binary``)."""
        r = self.resolution
        return self.binary.reshape(self.levels, r, r, r)

    def looked_up(self) -> Tensor:
        """[L * R^3] bool, flat like ``binary``: cells that some point looks up (all of level
        0; a coarser level's cells that lie within the next finer level are not)."""
        r, device = self.resolution, self.binary.device
        mask = torch.ones(self.levels, r, r, r, dtype=torch.bool, device=device)
        if self.levels > 1 and r >= 2:
            lo, hi = (r + 3) // 4, (3 * r) // 4    # cells wholly inside the middle half
            mask[1:, lo:hi, lo:hi, lo:hi] = False
        return mask.reshape(-1)

    def same_layout(self, other: OccupancyGrid) -> bool:
        """Whether ``other`` has the same cells (resolution, levels and box)."""
        return (self.resolution, self.levels) == (other.resolution, other.levels) and \
            torch.allclose(self.aabb, other.aabb.to(self.aabb))

    def extra_repr(self) -> str:
        box = [round(v, 4) for v in self.aabb.tolist()]
        return f"resolution={self.resolution}, levels={self.levels}, aabb={box}"

    # ------------------------------------------------------------------ geometry
    def cell_coords(self, indices: Tensor) -> Tensor:
        """[M] int64 flat cell indices -> [M, 3] int64 (i, j, k) coordinates within their
        level."""
        r = self.resolution
        return torch.stack([(indices // (r * r)) % r, (indices // r) % r, indices % r], -1)

    def cell_points(self, indices: Tensor, jitter: bool = True, offset: Tensor | None = None
                    ) -> Tensor:
        """[M] flat cell indices -> [M, 3] points: uniform in each cell, or its centre (or at
        ``offset`` [M, 3] in [0, 1) within each cell)."""
        coords = self.cell_coords(indices).to(self.aabb.dtype)
        if offset is None:
            offset = torch.rand_like(coords) if jitter else torch.full_like(coords, 0.5)
        if self.levels == 1:
            lo, hi = self.aabb[:3], self.aabb[3:]
        else:
            box = self.level_aabbs.index_select(0, indices // self.resolution**3)
            lo, hi = box[:, :3], box[:, 3:]
        return lo + (coords + offset) / self.resolution * (hi - lo)

    @torch.no_grad()
    def occupied_at(self, points: Tensor) -> Tensor:
        """[N, 3] points -> [N] bool: inside the box and in an occupied cell (False outside);
        with levels, in the cell of the finest level that contains the point."""
        if self.levels > 1:
            return self._occupied_at_levels(points)
        lo, hi = self.aabb[:3].to(points), self.aabb[3:].to(points)
        u = (points - lo) / (hi - lo)
        inside = ((u >= 0) & (u <= 1)).all(-1)
        r = self.resolution
        # u >= 0 inside the box, so truncation is floor there; outside (or NaN) any index in
        # range will do, since `inside` masks it.
        ijk = (u * r).long().clamp_(0, r - 1)
        flat = (ijk[:, 0] * r + ijk[:, 1]) * r + ijk[:, 2]
        return self.binary.reshape(-1).index_select(0, flat) & inside

    def _occupied_at_levels(self, points: Tensor) -> Tensor:
        lo, hi = self.aabb[:3].to(points), self.aabb[3:].to(points)
        v = (points - 0.5 * (lo + hi)) / (0.5 * (hi - lo))        # the finest box is [-1, 1]^3
        m = v.abs().amax(-1)
        level = torch.ceil(torch.log2(m.clamp_min(1.0))).nan_to_num_(self.levels)
        inside = level < self.levels                              # False for NaN / inf too
        level = level.clamp_(0, self.levels - 1)
        u = (v / torch.exp2(level)[:, None] + 1.0) * 0.5          # [0, 1]^3 within the level
        r = self.resolution
        ijk = (u * r).long().clamp_(0, r - 1)
        flat = ((level.long() * r + ijk[:, 0]) * r + ijk[:, 1]) * r + ijk[:, 2]
        return self.binary.reshape(-1).index_select(0, flat) & inside

    @torch.no_grad()
    def dilated(self, k: int) -> Tensor:
        """[L * R**3] bool, flat like ``binary``: cells with an occupied cell of their level
        within k cells per axis (a separable max filter; cached until ``binary`` changes)."""
        stamp = (self.binary.data_ptr(), self.binary._version)
        if self.__dict__.get("_dilated_stamp") != stamp:   # binary changed: start afresh
            self.__dict__.update(_dilated_stamp=stamp, _dilated_cache={})
        cache = self.__dict__["_dilated_cache"]
        if k not in cache:
            r = self.resolution
            occ = self.binary.float().reshape(self.levels, 1, r, r, r)
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
