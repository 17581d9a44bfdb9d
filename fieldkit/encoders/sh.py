"""Real spherical harmonics of unit directions, as in instant-ngp / tiny-cuda-nn.

``sh_encode(dirs, degree)`` returns ``degree**2`` values: bands ``l = 0 .. degree - 1``, each
ordered ``m = -l .. l``. The functions are orthonormal on the sphere and carry the
Condon-Shortley phase, so they match tiny-cuda-nn's ``SphericalHarmonics`` encoding
(``Y_1 = -0.4886 y, Y_2 = 0.4886 z, Y_3 = -0.4886 x, ...``) when it is given the same unit
vectors (tiny-cuda-nn itself takes ``(d + 1) / 2``, in [0, 1]^3).

Constants are written as their closed forms (``sqrt(15 / pi) / 2`` ...), not as decimals.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

MAX_DEGREE = 5
"""Largest supported ``degree`` (25 outputs: bands 0..4)."""

_PI = math.pi
C0 = 0.5 * math.sqrt(1 / _PI)                  # 0.28209479177387814
C1 = 0.5 * math.sqrt(3 / _PI)                  # 0.48860251190291987
C2 = (0.5 * math.sqrt(15 / _PI),               # 1.0925484305920792   xy, yz, xz
      0.25 * math.sqrt(5 / _PI),               # 0.31539156525251999  (3z^2 - 1)
      0.25 * math.sqrt(15 / _PI))              # 0.54627421529603959  (x^2 - y^2)
C3 = (0.125 * math.sqrt(70 / _PI),             # 0.59004358992664352  y(3x^2 - y^2)
      0.5 * math.sqrt(105 / _PI),              # 2.8906114426405538   xyz
      0.125 * math.sqrt(42 / _PI),             # 0.45704579946446572  y(5z^2 - 1)
      0.25 * math.sqrt(7 / _PI),               # 0.3731763325901154   z(5z^2 - 3)
      0.25 * math.sqrt(105 / _PI))             # 1.4453057213202769   z(x^2 - y^2)
C4 = (0.75 * math.sqrt(35 / _PI),              # 2.5033429417967046   xy(x^2 - y^2)
      0.375 * math.sqrt(70 / _PI),             # 1.7701307697799304   yz(3x^2 - y^2)
      0.75 * math.sqrt(5 / _PI),               # 0.94617469575756008  xy(7z^2 - 1)
      0.375 * math.sqrt(10 / _PI),             # 0.66904654355728921  yz(7z^2 - 3)
      3 / 16 * math.sqrt(1 / _PI),             # 0.10578554691520431  35z^4 - 30z^2 + 3
      0.375 * math.sqrt(5 / _PI),              # 0.47308734787878004  (x^2 - y^2)(7z^2 - 1)
      3 / 16 * math.sqrt(35 / _PI))            # 0.62583573544917614  x^4 - 6x^2y^2 + y^4


def sh_encode(dirs: Tensor, degree: int = 4) -> Tensor:
    """dirs [..., 3] unit vectors -> [..., degree**2] real SH basis values (same dtype).

    degree in 1..5. Inputs are not renormalised: pass unit vectors.
    """
    if not 1 <= degree <= MAX_DEGREE:
        raise ValueError(f"degree must be in 1..{MAX_DEGREE}, not {degree}")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, C0)]
    if degree > 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        xy, yz, xz = x * y, y * z, x * z
        out += [C2[0] * xy,
                -C2[0] * yz,
                C2[1] * (3 * zz - 1),
                -C2[0] * xz,
                C2[2] * (xx - yy)]
    if degree > 3:
        out += [C3[0] * y * (yy - 3 * xx),
                C3[1] * xy * z,
                C3[2] * y * (1 - 5 * zz),
                C3[3] * z * (5 * zz - 3),
                C3[2] * x * (1 - 5 * zz),
                C3[4] * z * (xx - yy),
                C3[0] * x * (3 * yy - xx)]
    if degree > 4:
        out += [C4[0] * xy * (xx - yy),
                C4[1] * yz * (yy - 3 * xx),
                C4[2] * xy * (7 * zz - 1),
                C4[3] * yz * (3 - 7 * zz),
                C4[4] * (35 * zz * zz - 30 * zz + 3),
                C4[3] * xz * (3 - 7 * zz),
                C4[5] * (xx - yy) * (7 * zz - 1),
                C4[1] * xz * (3 * yy - xx),
                C4[6] * (xx * xx - 6 * xx * yy + yy * yy)]
    return torch.stack(out, dim=-1)
