"""PSNR / SSIM: known values, monotonicity, and pytorch_msssim against a reference SSIM."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fieldkit.train.metrics import mse_to_psnr, psnr, ssim, ssim_window_size


def _image(h=48, w=64, seed=0) -> torch.Tensor:
    """[H, W, 3] smooth image with some texture, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([xs, ys, 0.5 + 0.4 * torch.sin(8 * xs + 5 * ys)], dim=-1)
    return (0.8 * base + 0.2 * torch.rand(h, w, 3, generator=g)).clamp(0, 1)


def _reference_ssim(x: torch.Tensor, y: torch.Tensor, win: int = 11, sigma: float = 1.5) -> float:
    """Textbook SSIM (Wang et al. 2004) in float64 with a 2-D Gaussian window, valid padding."""
    x = x.double().permute(2, 0, 1)[None]
    y = y.double().permute(2, 0, 1)[None]
    c = x.shape[1]
    coords = torch.arange(win, dtype=torch.float64) - win // 2
    g = torch.exp(-coords**2 / (2 * sigma**2))
    k2d = torch.outer(g, g)
    k2d = (k2d / k2d.sum())[None, None].repeat(c, 1, 1, 1)
    blur = lambda t: F.conv2d(t, k2d, groups=c)  # noqa: E731
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def test_psnr_identical_is_inf():
    img = _image()
    assert psnr(img, img) == math.inf
    assert psnr(img.reshape(-1, 3), img.reshape(-1, 3)) == math.inf


def test_psnr_known_mse():
    target = torch.full((10, 3), 0.5)
    pred = target + 0.1  # mse = 0.01
    assert psnr(pred, target) == pytest.approx(20.0, abs=1e-4)
    assert psnr(pred.numpy(), target.numpy()) == pytest.approx(20.0, abs=1e-4)
    assert float(mse_to_psnr(torch.tensor(0.01))) == pytest.approx(20.0, abs=1e-5)
    assert torch.allclose(mse_to_psnr(torch.tensor([1.0, 1e-3])), torch.tensor([0.0, 30.0]))


def test_psnr_clamps():
    target = torch.ones(4, 4, 3)
    assert psnr(target + 5.0, target) == math.inf  # over-range prediction clamps to 1
    assert psnr(torch.zeros(4, 4, 3), target) == pytest.approx(0.0, abs=1e-9)


def test_ssim_identical_and_decreasing_with_noise():
    img = _image()
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-6)
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(img.shape, generator=g)
    values = [ssim((img + s * noise).clamp(0, 1), img) for s in (0.02, 0.05, 0.1, 0.3)]
    assert values[0] < 1.0
    assert all(a > b for a, b in zip(values, values[1:])), values


@pytest.mark.parametrize("shape", [(48, 64), (23, 31)])
def test_ssim_matches_reference(shape):
    img = _image(*shape)
    g = torch.Generator().manual_seed(2)
    noisy = (img + 0.08 * torch.randn(img.shape, generator=g)).clamp(0, 1)
    blurred = F.avg_pool2d(img.permute(2, 0, 1)[None], 3, 1, 1)[0].permute(1, 2, 0)
    for other in (noisy, blurred):
        assert ssim(other, img) == pytest.approx(_reference_ssim(other, img), abs=1e-4)


def test_ssim_small_images_use_smaller_window():
    assert ssim_window_size(100, 100) == 11
    assert ssim_window_size(8, 20) == 7
    assert ssim_window_size(9, 20) == 9
    assert ssim_window_size(1, 1) == 1
    img = _image(8, 10)
    noisy = (img + 0.1 * torch.randn(img.shape, generator=torch.Generator().manual_seed(3)))
    noisy = noisy.clamp(0, 1)
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-6)
    assert ssim(noisy, img) == pytest.approx(_reference_ssim(noisy, img, win=7), abs=1e-4)


def test_ssim_accepts_numpy():
    img = _image().numpy().astype(np.float64)
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-6)
