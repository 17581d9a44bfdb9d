"""Where a bag of Gaussians is: the box and centre that a .ply file without cameras is framed by.

A .ply from any 3DGS trainer holds Gaussians in world units and nothing about where the scene
is. Its faint Gaussians are often stray fog or far background, so the frame comes from the
opaque ones: centred on their median, with a box that holds most of their centres. The
distillation of a bare .ply (``fieldkit/distill/source.py``) boxes its teacher with it, and the
viewer opens a .ply on it. When the cameras the Gaussians were trained from are known (a 3DGS
output folder's cameras.json), they place and orient the box as they would the capture's.
"""
from __future__ import annotations

import numpy as np
import torch

from fieldkit.data.normalize import Normalisation, auto_normalisation, power_of_two_at_least

BOX_SHARE = 0.975
"""The box of Gaussians alone holds this share of their opaque centres along every axis (the
rest, often far background, lies outside)."""
OPAQUE = 0.1
"""Gaussians at least this opaque place the box (faint ones are often stray fog)."""


def opaque_centres(means: torch.Tensor, opacities: torch.Tensor) -> torch.Tensor:
    """[M, 3] float64 centres of the Gaussians at least OPAQUE opaque (all of them when fewer
    than 8 are), from means [N, 3] and opacity logits [N]."""
    opaque = torch.sigmoid(opacities.float()) >= OPAQUE
    return (means[opaque] if int(opaque.sum()) >= 8 else means).double()


def splat_normalisation(means: torch.Tensor, opacities: torch.Tensor) -> Normalisation:
    """World -> box for Gaussians alone (means [N, 3], opacity logits [N]): centred on the
    median of the opaque Gaussians, axes kept, scaled so that the box [-1, 1]^3 holds
    BOX_SHARE of their centres along every axis."""
    pts = opaque_centres(means, opacities)
    center = pts.median(0).values
    half = float((pts - center).abs().max(1).values.quantile(BOX_SHARE))
    return Normalisation(1.0 / half if half > 0 else 1.0, np.eye(3), center.numpy(), 1.0)


def camera_normalisation(c2w: np.ndarray, means: torch.Tensor,
                         opacities: torch.Tensor) -> Normalisation:
    """World -> box for Gaussians (means [N, 3], opacity logits [N]) trained from cameras
    ``c2w`` [C, 4, 4] (OpenCV axes, world units): centre, up and region of interest as for a
    photo capture of those cameras (``auto_normalisation``, the opaque centres standing for
    sparse points), and a bound (a power of two) that holds BOX_SHARE of the opaque centres
    along every axis, not the cameras: the box is the teacher's, not the capture's."""
    pts = opaque_centres(means, opacities)
    norm = auto_normalisation(np.asarray(c2w, dtype=np.float64), pts.numpy(), orient=True,
                              bound=1.0)
    extent = float(norm.to_box(pts).abs().max(1).values.quantile(BOX_SHARE))
    norm.bound = power_of_two_at_least(extent)
    return norm
