"""Real spherical harmonics of unit directions (instant-ngp / tiny-cuda-nn constants)."""
from __future__ import annotations

import torch
from torch import Tensor


def sh_encode(dirs: Tensor, degree: int = 4) -> Tensor:
    """[N, 3] unit directions -> [N, degree**2] real SH basis values (degree 1..4)."""
    if not 1 <= degree <= 4:
        raise ValueError(f"sh degree must be 1..4, got {degree}")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree > 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [1.0925484305920792 * xy, -1.0925484305920792 * yz,
                0.94617469575755997 * zz - 0.31539156525251999,
                -1.0925484305920792 * xz, 0.54627421529603959 * xx - 0.54627421529603959 * yy]
    if degree > 3:
        out += [0.59004358992664352 * y * (-3.0 * xx + yy),
                2.8906114426405538 * xy * z,
                0.45704579946446572 * y * (1.0 - 5.0 * zz),
                0.3731763325901154 * z * (5.0 * zz - 3.0),
                0.45704579946446572 * x * (1.0 - 5.0 * zz),
                1.4453057213202769 * z * (xx - yy),
                0.59004358992664352 * x * (-xx + 3.0 * yy)]
    return torch.stack(out, dim=-1)
