"""Similarity transforms of Gaussian-splat params (``p' = scale * R @ p + t``).

Used to move splats between fieldkit's box coordinates and the scene's world units
(``fieldkit.data.normalize.Normalisation``: ``p_box = scale * R @ (p_world - center)``).

Under the transform a Gaussian's mean maps like a point, its covariance becomes
``scale^2 R Σ R^T`` (log-scales + log(scale), quaternion ``q' = q_R * q``), its opacity is
unchanged, and its SH coefficients are rotated so that the colour seen along a rotated viewing
direction is the colour seen before: ``colour'(R d) = colour(d)``.

SH rotation, band by band (l = 1..3): the band's basis functions span a rotation-invariant
space, so ``Y_l(R^T d) = D_l Y_l(d)`` for a (2l+1) x (2l+1) matrix ``D_l``. With
``colour'(d') = sum c'_m Y_lm(d')`` and ``colour(R^T d') = c^T D_l Y_l(d')`` the new coefficients
are ``c' = D_l^T c``. ``D_l^T`` is the exact least-squares solution X of ``Y_l(R^T d_i)^T =
Y_l(d_i)^T X`` over 64 fixed, well-spread unit directions ``d_i``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from fieldkit.data.normalize import Normalisation
from fieldkit.encoders.sh import sh_encode
from fieldkit.errors import FieldkitError

_NUM_DIRS = 64


def _fibonacci_dirs(n: int = _NUM_DIRS) -> Tensor:
    """[n, 3] float64 unit vectors spread evenly over the sphere (Fibonacci lattice)."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    r = (1 - z * z).sqrt()
    phi = i * math.pi * (3 - math.sqrt(5))
    return torch.stack([r * phi.cos(), r * phi.sin(), z], dim=-1)


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """[..., 4] quaternions (w, x, y, z), any norm -> [..., 3, 3] rotation matrices."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    rows = [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]
    return torch.stack(rows, dim=-1).reshape(*quats.shape[:-1], 3, 3)


def rotmat_to_quat(rotmats: Tensor) -> Tensor:
    """[..., 3, 3] rotation matrices -> [..., 4] unit quaternions (w, x, y, z) with w >= 0.

    Shepperd's method without branches: all four candidate quaternions are formed, each from
    one of 4|w|^2, 4|x|^2, 4|y|^2, 4|z|^2 on the diagonal, and the best conditioned is kept.
    """
    m = rotmats
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    four_sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                           1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1)  # 4 q_i^2
    q_abs = four_sq.clamp_min(0).sqrt()                                          # 2 |q_i|
    cand = torch.stack([
        torch.stack([four_sq[..., 0], m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, four_sq[..., 1], m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, four_sq[..., 2], m12 + m21], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, four_sq[..., 3]], dim=-1),
    ], dim=-2)                                                   # row i = 4 q_i * q
    cand = cand / (2 * q_abs.clamp_min(0.1))[..., None]          # row i = q (when q_i large)
    best = q_abs.argmax(dim=-1)[..., None, None].expand(*m.shape[:-2], 1, 4)
    q = cand.gather(-2, best).squeeze(-2)
    q = torch.nn.functional.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a * b`` of [..., 4] quaternions (w, x, y, z)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], dim=-1)


def sh_rotation_matrix(rotation: Tensor, degree: int) -> Tensor:
    """[K-1, K-1] float64 block-diagonal matrix X with ``shN' = X @ shN`` (per Gaussian and
    channel) for a [3, 3] rotation: bands 1..degree, K = (degree+1)^2."""
    rot = rotation.detach().to("cpu", torch.float64)
    dirs = _fibonacci_dirs()
    a = sh_encode(dirs, degree + 1)                  # [S, K]      Y(d_i)
    b = sh_encode(dirs @ rot, degree + 1)            # [S, K]      Y(R^T d_i) (row d^T R)
    k = (degree + 1) ** 2
    out = torch.zeros(k - 1, k - 1, dtype=torch.float64)
    for band in range(1, degree + 1):
        lo, hi = band * band, (band + 1) * (band + 1)
        x = torch.linalg.lstsq(a[:, lo:hi], b[:, lo:hi]).solution  # D_l^T
        out[lo - 1:hi - 1, lo - 1:hi - 1] = x
    return out


def _check_similarity(rotation: Tensor, scale: float) -> None:
    rot = rotation.detach().to("cpu", torch.float64)
    if rot.shape != (3, 3) or not torch.isfinite(rot).all():
        raise FieldkitError(f"splat transform needs a finite [3, 3] rotation, got shape "
                            f"{tuple(rot.shape)}; check the scene normalisation")
    err = (rot @ rot.T - torch.eye(3, dtype=torch.float64)).abs().max().item()
    if err > 1e-4 or torch.linalg.det(rot).item() < 0:
        raise FieldkitError("splat transform rotation is not a proper rotation (orthonormal, "
                            f"det +1; error {err:.1e}); check the scene normalisation")
    if not (math.isfinite(scale) and scale > 0):
        raise FieldkitError(f"splat transform scale must be positive and finite, not {scale}; "
                            "check the scene normalisation")


def transform_splats(params: dict[str, Tensor], rotation: Tensor, scale: float,
                     translation: Tensor) -> dict[str, Tensor]:
    """Apply ``p' = scale * rotation @ p + translation`` to splat params.

    ``params``: means [N, 3], scales [N, 3] (log), quats [N, 4], opacities [N], sh0 [N, 1, 3],
    shN [N, K-1, 3]; ``rotation`` [3, 3] proper rotation; ``scale`` > 0; ``translation`` [3].
    Returns new tensors (same dtypes and devices); other keys are copied unchanged.
    """
    rotation = torch.as_tensor(rotation)
    scale = float(scale)
    _check_similarity(rotation, scale)
    out = {k: v.clone() if isinstance(v, Tensor) else v for k, v in params.items()}

    means = params["means"]
    rot = rotation.to(means.device, torch.float64)
    t = torch.as_tensor(translation).to(means.device, torch.float64).reshape(3)
    out["means"] = (scale * means.double() @ rot.T + t).to(means.dtype)
    out["scales"] = (params["scales"].double() + math.log(scale)).to(params["scales"].dtype)

    quats = params["quats"]
    q_r = rotmat_to_quat(rot).to(quats.device)
    out["quats"] = quat_multiply(q_r.expand_as(quats), quats.double()).to(quats.dtype)

    sh_n = params.get("shN")
    if sh_n is not None and sh_n.shape[1] > 0:
        degree = math.isqrt(sh_n.shape[1] + 1) - 1
        if (degree + 1) ** 2 != sh_n.shape[1] + 1:
            raise FieldkitError(f"splat params shN has {sh_n.shape[1]} coefficients per channel; "
                                "expected 3, 8 or 15")
        x = sh_rotation_matrix(rotation, degree).to(sh_n.device)
        out["shN"] = torch.einsum("jk,nkc->njc", x, sh_n.double()).to(sh_n.dtype)
    return out


def splats_to_box(params: dict[str, Tensor], norm: Normalisation) -> dict[str, Tensor]:
    """World-unit splats -> box coordinates (``norm.matrix()``: scale * R @ (p - center))."""
    m = torch.as_tensor(norm.matrix(), dtype=torch.float64)
    return transform_splats(params, torch.as_tensor(norm.rotation, dtype=torch.float64),
                            float(norm.scale), m[:3, 3])


def splats_to_world(params: dict[str, Tensor], norm: Normalisation) -> dict[str, Tensor]:
    """Box-coordinate splats -> world units (``norm.inverse_matrix()``: R^T p / scale + center)."""
    m = torch.as_tensor(norm.inverse_matrix(), dtype=torch.float64)
    return transform_splats(params, torch.as_tensor(norm.rotation, dtype=torch.float64).T,
                            1.0 / float(norm.scale), m[:3, 3])
