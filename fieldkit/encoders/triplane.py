"""Multiscale tri-plane encoding (K-Planes, Fridovich-Keil et al. 2023, static case) in PyTorch.

Each scale ``s`` holds one parameter ``planes[s]`` of shape ``[3, F, R_s, R_s]``: the planes
xy, xz and yz, in that order, each an ``F``-channel image indexed ``[channel, row, column]``.
Plane ``p`` is looked up at the input coordinates ``(a, b) = PLANE_AXES[p]``:

- ``a`` (the first coordinate: x for xy and xz, y for yz) runs along the columns, which is
  ``grid_sample``'s x axis (``grid[..., 0]``, the last tensor dimension);
- ``b`` (the second: y for xy, z for xz and yz) runs along the rows, ``grid_sample``'s y axis.

So texel ``planes[s][p, :, i, j]`` sits at ``a = j / (R_s - 1)``, ``b = i / (R_s - 1)``:
texel centres are corner-aligned (``align_corners=True``), the four corner texels lie exactly
on the corners of [0, 1]^2. Lookups are bilinear; inputs outside [0, 1] are clamped
(``padding_mode="border"``).

At each scale the three planes' ``F`` features are combined by ``config.combine``:
``"product"`` (elementwise, the K-Planes choice: F outputs), ``"sum"`` (F outputs) or
``"concat"`` (xy, xz, yz features side by side: 3F outputs). Scales are concatenated, coarse
first, so ``out_dim`` is ``F * len(resolutions)`` (product, sum) or ``3 * F * len(resolutions)``
(concat).

Regularisers for the training loss: ``total_variation()`` and ``l1()`` (see their docstrings).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fieldkit.encoders.plane_tv import plane_tv

PLANE_AXES = ((0, 1), (0, 2), (1, 2))
"""Input coordinates (column axis, row axis) of the planes xy, xz, yz, in parameter order."""

COMBINE_MODES = ("product", "sum", "concat")
"""Valid values of ``TriPlaneConfig.combine``."""

DEFAULT_INIT = {"product": (0.1, 0.5), "sum": (-0.1, 0.1), "concat": (-0.1, 0.1)}
"""Uniform init range per combine mode, used where ``init_low`` / ``init_high`` are None.

product: positive and away from 0 (K-Planes' U(0.1, 0.5)). A product feature is ~0.3**3 = 0.027
and the gradient reaching one plane is the product of the other two (~0.09), so neither the
features nor the gradients vanish; a symmetric init around 0 would give products of ~1e-3 and
gradients of ~1e-2 that shrink with every extra factor. sum / concat: each plane gets its own
gradient whatever the others hold, so small values around 0 (U(-0.1, 0.1)) start the field near
zero with no preferred sign, like the hash grid's near-zero table."""


@dataclass
class TriPlaneConfig:
    """Shape and initialisation of a multiscale tri-plane (K-Planes) encoder."""

    resolutions: tuple[int, ...] = (32, 64, 128, 256)
    """Texels per side of the planes at each scale, coarse to fine (each >= 2)."""
    features: int = 16
    """Channels F per plane per scale."""
    combine: Literal["product", "sum", "concat"] = "product"
    """How the xy, xz, yz features of one scale are combined: product, sum or concat (3x wider)."""
    init_low: float | None = None
    """Lower bound of the uniform plane init; None: 0.1 for product, -0.1 for sum and concat."""
    init_high: float | None = None
    """Upper bound of the uniform plane init; None: 0.5 for product, 0.1 for sum and concat."""

    def __post_init__(self) -> None:
        self.resolutions = tuple(int(r) for r in self.resolutions)   # JSON gives a list
        check_config(self)

    def init_range(self) -> tuple[float, float]:
        """(low, high) of the uniform plane init, defaults filled in from ``DEFAULT_INIT``."""
        low, high = DEFAULT_INIT[self.combine]
        return (low if self.init_low is None else self.init_low,
                high if self.init_high is None else self.init_high)


def check_config(config: TriPlaneConfig) -> None:
    """Raise ValueError with a one-line message naming the bad field and what is allowed."""
    if config.combine not in COMBINE_MODES:
        raise ValueError(f"triplane combine must be one of {', '.join(COMBINE_MODES)}, "
                         f"not {config.combine!r}")
    if not config.resolutions or min(config.resolutions) < 2:
        raise ValueError(f"triplane resolutions must be one or more sizes >= 2, "
                         f"not {tuple(config.resolutions)}")
    if config.features < 1:
        raise ValueError(f"triplane features must be >= 1, not {config.features}")
    low, high = config.init_range()
    if not low <= high:
        raise ValueError(f"triplane init_low ({low}) must not exceed init_high ({high})")


class TriPlane(nn.Module):
    """Multiscale tri-plane encoding: x [N, 3] in [0, 1] -> features [N, out_dim].

    Parameters ``planes[s]`` [3, F, R_s, R_s] (xy, xz, yz; see the module docstring for the
    axis mapping). One ``grid_sample`` call per scale samples the three planes as a batch of 3.
    """

    def __init__(self, config: TriPlaneConfig):
        super().__init__()
        check_config(config)
        self.config = config
        Fc, S = config.features, len(config.resolutions)
        self.out_dim = (3 * Fc if config.combine == "concat" else Fc) * S
        low, high = config.init_range()
        self.planes = nn.ParameterList(
            nn.Parameter(torch.empty(3, Fc, r, r).uniform_(low, high))
            for r in config.resolutions)
        """[S] of [3, F, R_s, R_s]: planes xy, xz, yz of each scale, coarse to fine."""

    def forward(self, x: Tensor) -> Tensor:
        """x [N, 3] in [0, 1] (clamped) -> [N, out_dim] in the planes' dtype, scale-major.

        Differentiable with respect to the planes and to ``x`` (zero outside [0, 1]).
        Concat layout within a scale: xy features, then xz, then yz.
        """
        dtype = self.planes[0].dtype
        g = x.to(dtype) * 2 - 1                                       # [N, 3] in [-1, 1]
        grid = torch.stack([g[:, list(ax)] for ax in PLANE_AXES])      # [3, N, 2] (col, row)
        grid = grid[:, None]                                          # [3, 1, N, 2]
        n, combine = x.shape[0], self.config.combine
        feats = []
        for planes in self.planes:                                    # [3, F, R, R]
            f = F.grid_sample(planes, grid, mode="bilinear", padding_mode="border",
                              align_corners=True)[:, :, 0]            # [3, F, N]
            if combine == "product":
                f = f[0] * f[1] * f[2]                                # [F, N]
            elif combine == "sum":
                f = f[0] + f[1] + f[2]                                # [F, N]
            else:
                f = f.reshape(-1, n)                                  # [3F, N]
            feats.append(f)
        return torch.cat(feats).t().contiguous()                      # [N, out_dim]

    def total_variation(self) -> Tensor:
        """Scalar smoothness penalty: mean over scales and the 3 planes of
        ``mean((P[:, i+1, j] - P[:, i, j])**2) + mean((P[:, i, j+1] - P[:, i, j])**2)``.

        Squared differences between neighbouring texels along rows and along columns, each
        averaged over channels and texel pairs. Averaging (not summing) over texels keeps one
        weight meaningful for any resolution. Per plane, K-Planes' ``compute_plane_tv`` is twice
        this (``2 * (h_tv / count_h + w_tv / count_w)``); check how a K-Planes weight was reduced
        over planes and scales, and double it, before reusing it here.

        Computed by ``plane_tv`` (value and gradient in one pass; ``plane_tv_reference`` is
        the autograd twin it is tested against).
        """
        return plane_tv(list(self.planes))

    def l1(self) -> Tensor:
        """Scalar sparsity penalty: mean over scales of ``mean(|planes[s]|)`` (all 3 planes,
        channels and texels of one scale averaged together, then the scales averaged).

        Plain |plane| for all modes: these are static planes; K-Planes' L1 on ``1 - plane``
        is for its time planes, which fieldkit does not have. In product mode the pull towards
        0 zeroes the product, i.e. pushes features of empty space to 0.
        """
        return torch.stack([planes.abs().mean() for planes in self.planes]).mean()

    def extra_repr(self) -> str:
        c = self.config
        return (f"resolutions={tuple(c.resolutions)}, features={c.features}, "
                f"combine={c.combine!r}, out_dim={self.out_dim}")
