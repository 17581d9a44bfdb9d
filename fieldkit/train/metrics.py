"""Image quality metrics: PSNR and SSIM.

Images are float RGB in [0, 1]: ``[H, W, 3]`` (or flat ``[N, 3]`` pixel batches for PSNR).
Values are clamped to [0, 1] before comparison, as in nerfstudio's evaluation.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from pytorch_msssim import ssim as _msssim_ssim
from torch import Tensor

SSIM_WINDOW = 11
"""Standard SSIM Gaussian window size (Wang et al. 2004); sigma 1.5."""
SSIM_SIGMA = 1.5


def _as_tensor(x: Tensor | np.ndarray) -> Tensor:
    t = torch.as_tensor(x)
    if not t.is_floating_point():
        raise TypeError(f"metrics expect float images in [0, 1], got dtype {t.dtype}")
    return t.detach().to(torch.float32).clamp(0.0, 1.0)


def mse_to_psnr(mse: Tensor) -> Tensor:
    """PSNR in dB for images in [0, 1]: ``-10 log10(mse)``; any shape, elementwise."""
    return -10.0 * torch.log10(mse)


def psnr(pred: Tensor | np.ndarray, target: Tensor | np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB.

    ``pred``, ``target``: ``[H, W, 3]`` or ``[N, 3]`` float in [0, 1] (clamped). Returns
    ``10 log10(1 / mse)``, or ``inf`` for identical images.
    """
    p, t = _as_tensor(pred), _as_tensor(target)
    if p.shape != t.shape:
        raise ValueError(f"psnr: shape mismatch {tuple(p.shape)} vs {tuple(t.shape)}")
    mse = float(((p.double() - t.double()) ** 2).mean())
    if mse == 0.0:
        return float("inf")
    return -10.0 * math.log10(mse)


def ssim_window_size(height: int, width: int, window: int = SSIM_WINDOW) -> int:
    """Largest odd window <= ``window`` that fits in an ``height`` x ``width`` image."""
    w = min(window, height, width)
    return max(1, w if w % 2 == 1 else w - 1)


def ssim(pred: Tensor | np.ndarray, target: Tensor | np.ndarray) -> float:
    """Structural similarity (mean over pixels and channels) with an 11x11 Gaussian window
    (sigma 1.5, valid convolution, K = (0.01, 0.03), data range 1), via ``pytorch_msssim``.

    ``pred``, ``target``: ``[H, W, 3]`` (any channel count works) float in [0, 1] (clamped).
    Images smaller than the window use the largest odd window that fits.
    """
    p, t = _as_tensor(pred), _as_tensor(target)
    if p.shape != t.shape or p.dim() != 3:
        raise ValueError(f"ssim expects two [H, W, C] images, got {tuple(p.shape)} and "
                         f"{tuple(t.shape)}")
    h, w = p.shape[:2]
    x = p.permute(2, 0, 1)[None]  # [1, C, H, W]
    y = t.permute(2, 0, 1)[None]
    win = ssim_window_size(h, w)
    return float(_msssim_ssim(x, y, data_range=1.0, size_average=True, win_size=win,
                              win_sigma=SSIM_SIGMA))
