"""Spherical harmonics: independent Legendre evaluation, orthonormality, tcnn constants."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fieldkit.encoders.sh import MAX_DEGREE, sh_encode


def _unit(n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    d = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return d / d.norm(dim=-1, keepdim=True)


def _legendre(l: int, m: int, t: np.ndarray) -> np.ndarray:
    """Associated Legendre P_l^m(t), m >= 0, with the Condon-Shortley phase (-1)^m."""
    pmm = (-1) ** m * math.prod(range(1, 2 * m, 2)) * (1 - t * t) ** (m / 2)
    if l == m:
        return pmm
    p_prev, p = pmm, t * (2 * m + 1) * pmm
    for ll in range(m + 2, l + 1):
        p_prev, p = p, ((2 * ll - 1) * t * p - (ll + m - 1) * p_prev) / (ll - m)
    return p


def _real_sh(l: int, m: int, d: np.ndarray) -> np.ndarray:
    """Textbook real SH from spherical angles (theta from +z, phi from +x towards +y)."""
    theta = np.arccos(np.clip(d[:, 2], -1, 1))
    phi = np.arctan2(d[:, 1], d[:, 0])
    k = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - abs(m))
                  / math.factorial(l + abs(m)))
    p = _legendre(l, abs(m), np.cos(theta))
    if m > 0:
        return math.sqrt(2) * k * np.cos(m * phi) * p
    if m < 0:
        return math.sqrt(2) * k * np.sin(-m * phi) * p
    return k * p


@pytest.mark.parametrize("degree", range(1, MAX_DEGREE + 1))
def test_matches_legendre_evaluation(degree):
    d = _unit(500, seed=degree)
    d[:3] = torch.tensor([[0.0, 0, 1], [0, 0, -1], [1, 0, 0]], dtype=d.dtype)   # poles, equator
    out = sh_encode(d, degree)
    assert out.shape == (500, degree**2) and out.dtype == torch.float64
    expected = np.stack([_real_sh(l, m, d.numpy()) for l in range(degree)
                         for m in range(-l, l + 1)], axis=-1)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-12)


def test_orthonormal_monte_carlo():
    y = sh_encode(_unit(200_000, seed=11), MAX_DEGREE)         # [200k, 25]
    gram = (y.T @ y) * (4 * math.pi / y.shape[0])
    assert (gram - torch.eye(y.shape[1], dtype=gram.dtype)).abs().max() < 0.02


def test_tcnn_constants_and_signs():
    """The first 16 values, written with tiny-cuda-nn's decimal constants."""
    x, y, z = 0.48, -0.6, 0.64                                 # a unit vector
    xy, yz, xz, x2, y2, z2 = x * y, y * z, x * z, x * x, y * y, z * z
    tcnn = [0.28209479177387814, -0.48860251190291987 * y, 0.48860251190291987 * z,
            -0.48860251190291987 * x, 1.0925484305920792 * xy, -1.0925484305920792 * yz,
            0.94617469575755997 * z2 - 0.31539156525251999, -1.0925484305920792 * xz,
            0.54627421529603959 * (x2 - y2), 0.59004358992664352 * y * (-3 * x2 + y2),
            2.8906114426405538 * xy * z, 0.45704579946446572 * y * (1 - 5 * z2),
            0.3731763325901154 * z * (5 * z2 - 3), 0.45704579946446572 * x * (1 - 5 * z2),
            1.4453057213202769 * z * (x2 - y2), 0.59004358992664352 * x * (-x2 + 3 * y2)]
    out = sh_encode(torch.tensor([[x, y, z]], dtype=torch.float64))[0]
    np.testing.assert_allclose(out.numpy(), tcnn, atol=1e-15)
    f32 = sh_encode(torch.tensor([[x, y, z]]))
    assert f32.dtype == torch.float32 and f32.shape == (1, 16)


def test_batch_shapes_grad_and_bad_degree():
    d = _unit(12, dtype=torch.float32).view(3, 4, 3).requires_grad_(True)
    out = sh_encode(d, 3)
    assert out.shape == (3, 4, 9)
    out.sum().backward()
    assert d.grad is not None and torch.isfinite(d.grad).all()
    with pytest.raises(ValueError):
        sh_encode(d, 0)
    with pytest.raises(ValueError):
        sh_encode(d, MAX_DEGREE + 1)
