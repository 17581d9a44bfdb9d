"""Crop box: everything outside an axis-aligned box (box coordinates) is shown as empty.

Volumetric models get a field wrapper whose density is zero outside the box (colours are kept;
with no density they do not composite). Splat models keep only the Gaussians whose centres lie
inside.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class CropBox:
    """Axis-aligned box in box coordinates."""

    lo: tuple[float, float, float]
    """[3] minimum corner."""
    hi: tuple[float, float, float]
    """[3] maximum corner."""

    def inside(self, points: Tensor) -> Tensor:
        """[N, 3] points -> [N] bool."""
        lo = torch.tensor(self.lo, dtype=points.dtype, device=points.device)
        hi = torch.tensor(self.hi, dtype=points.dtype, device=points.device)
        return ((points >= lo) & (points <= hi)).all(dim=-1)

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
