"""Crop box: everything outside an axis-aligned box (box coordinates) is empty.

Volumetric models get a field wrapper whose density is zero outside the box (colours are kept;
with no density they do not composite), and their occupancy grid loses the cells that lie
wholly outside it, so that neither the marcher nor a distillation's point samples visit them.
Splat models keep only the Gaussians whose centres lie inside.

The viewer crops what it shows (``cropped_volume``, ``crop_splat_params``); exports, videos and
distillation crop the model they load (``crop_model``, the command line's ``--crop``). Both take
box coordinates, the frame the viewer's "Crop box" panel shows.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from fieldkit.errors import FieldkitError


@dataclass(frozen=True)
class CropBox:
    """Axis-aligned box in box coordinates."""

    lo: tuple[float, float, float]
    """[3] minimum corner."""
    hi: tuple[float, float, float]
    """[3] maximum corner."""

    @classmethod
    def from_flat(cls, values: Sequence[float] | None) -> CropBox | None:
        """``--crop X0 Y0 Z0 X1 Y1 Z1`` (None: no crop), after a one-line error for a box
        that is not one."""
        if values is None:
            return None
        values = [float(v) for v in values]
        if len(values) != 6 or not all(math.isfinite(v) for v in values):
            raise FieldkitError(f"--crop takes six finite numbers, X0 Y0 Z0 X1 Y1 Z1 (box "
                                f"coordinates, as the viewer's Crop box panel shows), not "
                                f"{values}")
        lo, hi = tuple(values[:3]), tuple(values[3:])
        if not all(a < b for a, b in zip(lo, hi)):
            raise FieldkitError(f"--crop: the minimum corner {lo} must lie below the maximum "
                                f"corner {hi} on every axis")
        return cls(lo, hi)

    def flat(self) -> list[float]:
        """[6] X0 Y0 Z0 X1 Y1 Z1 (``from_flat``'s input)."""
        return [*self.lo, *self.hi]

    def inside(self, points: Tensor) -> Tensor:
        """[N, 3] points -> [N] bool."""
        lo = torch.tensor(self.lo, dtype=points.dtype, device=points.device)
        hi = torch.tensor(self.hi, dtype=points.dtype, device=points.device)
        return ((points >= lo) & (points <= hi)).all(dim=-1)

    def clip(self, bound: float) -> tuple[list[float], list[float]] | None:
        """(lo [3], hi [3]) of the box's overlap with [-bound, bound]^3, or None if they do not
        overlap."""
        lo = [max(a, -bound) for a in self.lo]
        hi = [min(b, bound) for b in self.hi]
        return (lo, hi) if all(a < b for a, b in zip(lo, hi)) else None

    @property
    def center(self) -> tuple[float, float, float]:
        return tuple((a + b) / 2 for a, b in zip(self.lo, self.hi))

    @property
    def size(self) -> tuple[float, float, float]:
        return tuple(max(b - a, 0.0) for a, b in zip(self.lo, self.hi))


class CroppedField(nn.Module):
    """A radiance field whose density is zero outside ``box`` (same interface as
    ``fieldkit.fields.radiance.RadianceField``: ``density(points)`` and ``forward(points,
    dirs) -> (rgb, sigma)``)."""

    def __init__(self, field: nn.Module, box: CropBox):
        super().__init__()
        self.inner, self.box = field, box

    def density(self, points: Tensor) -> Tensor:
        """[N, 3] -> [N]."""
        return self.inner.density(points) * self.box.inside(points)

    def forward(self, points: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
        """[N, 3], [N, 3] -> rgb [N, 3], sigma [N]."""
        rgb, sigma = self.inner(points, dirs)
        return rgb, sigma * self.box.inside(points)


@contextmanager
def cropped_volume(model: nn.Module, box: CropBox | None):
    """Within the block, ``model.field`` (a volumetric model's field) is cropped to ``box``.
    The caller must own the model for the duration (the render thread or the training thread
    between steps)."""
    if box is None or "field" not in model._modules:
        yield model
        return
    original = model._modules["field"]
    model._modules["field"] = CroppedField(original, box)
    try:
        yield model
    finally:
        model._modules["field"] = original


def crop_splat_params(params: dict[str, Tensor], box: CropBox | None) -> dict[str, Tensor]:
    """Splat parameters (``SplatModel.export_params`` layout) keeping the Gaussians whose
    means are inside ``box``."""
    if box is None:
        return params
    keep = box.inside(params["means"])
    return {k: v[keep] for k, v in params.items()}


@torch.no_grad()
def crop_grid(grid, box: CropBox) -> None:
    """Empty the cells of an ``OccupancyGrid`` that lie wholly outside ``box`` (binary False,
    density 0), in place."""
    cells = torch.arange(grid.num_cells, device=grid.aabb.device)
    lo = grid.cell_points(cells, offset=torch.zeros(len(cells), 3, device=grid.aabb.device))
    hi = grid.cell_points(cells, offset=torch.ones(len(cells), 3, device=grid.aabb.device))
    blo = torch.tensor(box.lo, dtype=lo.dtype, device=lo.device)
    bhi = torch.tensor(box.hi, dtype=lo.dtype, device=lo.device)
    overlaps = ((hi >= blo) & (lo <= bhi)).all(-1)
    grid.binary.view(-1).logical_and_(overlaps)
    grid.density.mul_(overlaps)


def crop_model(model: nn.Module, box: CropBox | None, what: str = "the model") -> nn.Module:
    """``model`` (any kind, loaded for export, rendering or distillation) cropped to ``box``
    for good, in place: a splat model keeps the Gaussians inside, a volumetric model gets a
    ``CroppedField`` and an occupancy grid emptied outside. A one-line error when nothing of
    ``what`` is left."""
    if box is None:
        return model
    if not all(a < b for a, b in zip(box.lo, box.hi)):   # the viewer's boxes are not checked
        raise FieldkitError(f"the crop box's minimum corner {box.lo} must lie below its maximum "
                            f"corner {box.hi} on every axis")
    if getattr(model, "kind", None) == "splat":
        params = crop_splat_params(model.export_params(), box)
        if len(params["means"]) == 0:
            raise FieldkitError(f"--crop {_fmt(box)} holds none of the {model.num_gaussians:,} "
                                f"Gaussians of {what}; widen it (box coordinates)")
        model.set_gaussians(params)
        return model
    bound = float(model.config.render.bound)
    if box.clip(bound) is None:
        raise FieldkitError(f"--crop {_fmt(box)} lies outside the scene's box, [-{bound:g}, "
                            f"{bound:g}] on every axis; give box coordinates")
    model._modules["field"] = CroppedField(model._modules["field"], box)
    crop_grid(model.grid, box)
    return model


def _fmt(box: CropBox) -> str:
    return " ".join(f"{v:g}" for v in box.flat())
