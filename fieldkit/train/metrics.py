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


CC_ITERS = 5
"""Refits of ``color_correct`` (each on the pixels its last fit left unclipped)."""
CC_FIT_PIXELS = 1 << 18
"""Larger images fit the correction on an even stride of about this many pixels and apply it
to all (a 1080 x 1920 view: 1.3 s instead of 3.0 s; up to 512 x 512 every pixel is fitted)."""
CC_EPS = 0.5 / 255
"""Channel values within this of 0 or 1 count as clipped and are left out of the fit."""


def color_correct(pred: Tensor | np.ndarray, target: Tensor | np.ndarray) -> Tensor:
    """``pred`` [H, W, 3] (or [N, 3]) with its colours mapped onto ``target``'s: per output
    channel, a least-squares polynomial of the three input channels (their pairwise products,
    the channels and a constant), fitted on the pixels clipped in neither image and refitted
    ``CC_ITERS`` times (on at most ~``CC_FIT_PIXELS`` of them). mip-NeRF 360's colour
    correction, which Zip-NeRF and gsplat report as "cc_psnr": it scores a render without
    its photo's exposure and white balance."""
    p, t = _as_tensor(pred).double(), _as_tensor(target).double()
    if p.shape != t.shape or p.shape[-1] != 3:
        raise ValueError(f"color_correct expects two [..., 3] images of one shape, got "
                         f"{tuple(p.shape)} and {tuple(t.shape)}")
    x, y = p.reshape(-1, 3), t.reshape(-1, 3)
    fit = torch.arange(0, len(x), max(1, len(x) // CC_FIT_PIXELS))    # the pixels fitted on

    def unclipped(z: Tensor) -> Tensor:
        return (z >= CC_EPS) & (z <= 1 - CC_EPS)

    def features(z: Tensor) -> Tensor:                                   # [N, 10]
        return torch.cat([torch.stack([z[:, i] * z[:, j] for i, j in pairs], -1), z,
                          torch.ones_like(z[:, :1])], -1)

    first, pairs = unclipped(x[fit]), [(i, j) for i in range(3) for j in range(i, 3)]
    for _ in range(CC_ITERS):
        feats, cols = features(x[fit]), []
        for c in range(3):
            keep = (first[:, c] & unclipped(x[fit, c]) & unclipped(y[fit, c])).double()[:, None]
            a, b = feats * keep, y[fit, c:c + 1] * keep
            # normal equations with a tiny ridge: solvable when few pixels are unclipped
            gram = a.T @ a + 1e-9 * torch.eye(a.shape[1], dtype=a.dtype)
            cols.append(torch.linalg.solve(gram, a.T @ b))
        x = (features(x) @ torch.cat(cols, 1)).clamp(0, 1)
    return x.reshape(p.shape).float()


def psnr_cc(pred: Tensor | np.ndarray, target: Tensor | np.ndarray) -> float:
    """PSNR after ``color_correct``: the render's colours fitted to the photo first."""
    return psnr(color_correct(pred, target), target)
