"""OpenCV radial-tangential lens distortion, forward and exactly inverted.

Parameters are packed per camera as ``[k1, k2, k3, k4, p1, p2]`` and act on normalised image
coordinates ``(x, y) = (X/Z, Y/Z)`` in OpenCV camera axes:

    r2     = x^2 + y^2
    radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3 + k4 r2^4
    x_d    = x radial + 2 p1 x y + p2 (r2 + 2 x^2)
    y_d    = y radial + p1 (r2 + 2 y^2) + 2 p2 x y

COLMAP's SIMPLE_RADIAL / RADIAL / OPENCV models and instant-ngp's k1 k2 [k3 k4] p1 p2 are all
special cases (missing terms are zero). The inverse has no closed form; ``undistort`` solves it
with Newton's method on the 2x2 Jacobian, in float64, to far below a hundredth of a pixel.
"""
from __future__ import annotations

import torch
from torch import Tensor

NUM_PARAMS = 6
"""Length of a packed distortion vector: k1, k2, k3, k4, p1, p2."""


def _terms(xy: Tensor, params: Tensor) -> tuple[Tensor, ...]:
    x, y = xy[..., 0], xy[..., 1]
    k1, k2, k3, k4, p1, p2 = params.unbind(-1)
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4)))
    return x, y, r2, radial, k1, k2, k3, k4, p1, p2


def distort(xy: Tensor, params: Tensor) -> Tensor:
    """Apply distortion. ``xy``: [..., 2] undistorted normalised coords; ``params``: [..., 6]
    (broadcastable). Returns [..., 2] distorted normalised coords."""
    x, y, r2, radial, _, _, _, _, p1, p2 = _terms(xy, params)
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return torch.stack([xd, yd], dim=-1)


def _distort_with_jacobian(xy: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
    """Distorted coords [..., 2] and the Jacobian d(xd, yd)/d(x, y) as [..., 2, 2]."""
    x, y, r2, radial, k1, k2, k3, k4, p1, p2 = _terms(xy, params)
    # d(radial)/d(r2); d(r2)/dx = 2x.
    dradial = k1 + r2 * (2 * k2 + r2 * (3 * k3 + r2 * 4 * k4))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    dxd_dx = radial + 2 * x * x * dradial + 2 * p1 * y + 6 * p2 * x
    dxd_dy = 2 * x * y * dradial + 2 * p1 * x + 2 * p2 * y
    dyd_dx = 2 * x * y * dradial + 2 * p1 * x + 2 * p2 * y
    dyd_dy = radial + 2 * y * y * dradial + 6 * p1 * y + 2 * p2 * x
    jac = torch.stack(
        [torch.stack([dxd_dx, dxd_dy], -1), torch.stack([dyd_dx, dyd_dy], -1)], -2
    )
    return torch.stack([xd, yd], dim=-1), jac


def undistort(xy_distorted: Tensor, params: Tensor, iters: int = 20, tol: float = 1e-12) -> Tensor:
    """Invert ``distort`` by Newton iteration.

    ``xy_distorted``: [..., 2] distorted normalised coords; ``params``: [..., 6] (broadcastable).
    Returns [..., 2] undistorted coords in the input dtype. Work is done in float64; iteration
    stops early once every residual is below ``tol`` (normalised units, i.e. ~1e-9 px).
    """
    out_dtype = xy_distorted.dtype
    target = xy_distorted.double()
    p = params.double().expand(*target.shape[:-1], NUM_PARAMS)
    xy = target.clone()
    for _ in range(iters):
        value, jac = _distort_with_jacobian(xy, p)
        residual = value - target  # [..., 2]
        if residual.abs().max() <= tol if residual.numel() else True:
            break
        a, b = jac[..., 0, 0], jac[..., 0, 1]
        c, d = jac[..., 1, 0], jac[..., 1, 1]
        det = a * d - b * c
        det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
        dx = (d * residual[..., 0] - b * residual[..., 1]) / det
        dy = (-c * residual[..., 0] + a * residual[..., 1]) / det
        xy = xy - torch.stack([dx, dy], dim=-1)
    return xy.to(out_dtype)


def is_zero(params: Tensor | None) -> bool:
    """True when there is no distortion at all (fast path for pinhole cameras)."""
    return params is None or bool((params == 0).all())
