"""Differentiable compositing of packed ray samples, plus a dense reference path.

Packed layout (as nerfacc): the samples of all rays are flattened into 1-D arrays of length S,
grouped by ray, with ``ray_indices`` [S] int64 sorted ascending. Transmittance within each ray
is an exclusive cumulative sum of optical depth, computed for all rays at once as a global
cumsum minus the value at each ray's first sample (no Python loop over rays).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor

if TYPE_CHECKING:
    from fieldkit.render.volume import RaySamples

RgbSigmaFn = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
"""(t_starts [S], t_ends [S], ray_indices [S]) -> (rgb [S, 3], sigma [S])."""
DenseRgbSigmaFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
"""(t_starts [R, N], t_ends [R, N]) -> (rgb [R, N, 3], sigma [R, N])."""


def segment_first(ray_indices: Tensor, n_rays: int) -> Tensor:
    """[S] sorted ray indices -> [S] int64 position of the first sample of each sample's ray."""
    counts = torch.bincount(ray_indices, minlength=n_rays)
    starts = torch.cumsum(counts, 0) - counts
    return starts[ray_indices]


def _scan_dtype(x: Tensor) -> torch.dtype:
    # float64 keeps the global cumsum exact enough when it runs over millions of samples
    # (float32 would lose ~1e-7 x the running total in every per-ray difference).
    return x.dtype if x.device.type == "mps" else torch.float64


def exclusive_per_ray(x: Tensor, first: Tensor) -> Tensor:
    """[S] -> [S] sum of x over the earlier samples of the same ray (``first``: the position of
    each sample's first, ``segment_first``). The global scan runs in ``_scan_dtype``."""
    x64 = x.to(_scan_dtype(x))
    exclusive = torch.cumsum(x64, 0) - x64
    return (exclusive - exclusive[first]).to(x.dtype)


def render_weights(
    sigmas: Tensor, t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor, n_rays: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Volume-rendering weights of packed samples.

    Args:
        sigmas: [S] density (>= 0). t_starts, t_ends: [S] interval bounds along the ray.
        ray_indices: [S] int64, sorted ascending. n_rays: number of rays R.
    Returns:
        weights [S] = T * alpha, transmittance [S] T_i = exp(-sum_{j<i} sigma_j delta_j)
        (within the sample's ray), alphas [S] = 1 - exp(-sigma * delta).
    """
    sigmas = sigmas.reshape(-1)
    tau = sigmas * (t_ends - t_starts)
    alphas = 1.0 - torch.exp(-tau)
    trans = torch.exp(-exclusive_per_ray(tau, segment_first(ray_indices, n_rays)))
    return trans * alphas, trans, alphas


def accumulate(weights: Tensor, values: Tensor | None, ray_indices: Tensor, n_rays: int) -> Tensor:
    """Sum ``weights [S] * values [S, C]`` (or [S]) per ray -> [n_rays, C].

    ``values=None`` sums the weights themselves (the opacity) -> [n_rays, 1].
    """
    src = weights[:, None]
    if values is not None:
        src = src * (values[:, None] if values.dim() == 1 else values)
    return src.new_zeros(n_rays, src.shape[-1]).index_add(0, ray_indices, src)


def _over_background(rgb: Tensor, opacity: Tensor, background: Tensor | None) -> Tensor:
    if background is None:
        return rgb
    return rgb + (1.0 - opacity) * background.to(rgb).reshape(-1, 3)


def render_rays(
    rgb_sigma_fn: RgbSigmaFn,
    samples: RaySamples,
    n_rays: int,
    background: Tensor | None = None,
    weights_fn: Callable = render_weights,
    accumulate_fn: Callable = accumulate,
) -> dict[str, Tensor | int]:
    """Query the field at packed samples and composite them.

    Args:
        rgb_sigma_fn: (t_starts [S], t_ends [S], ray_indices [S]) -> (rgb [S, 3], sigma [S]);
            it computes positions from its own captured origins/dirs (see ``midpoints``). It is
            not called when there are no samples.
        samples: output of ``march``. n_rays: R.
        background: [3] or [R, 3] colour behind the scene; None composites over black.
        weights_fn, accumulate_fn: the twins of ``render_weights`` and ``accumulate`` to use
            (nerfacc's on CUDA: ``volume_nerfacc.render_rays_nerfacc``).
    Returns:
        "rgb" [R, 3] = sum w * rgb + (1 - opacity) * background; "depth" [R, 1] expected depth
        sum w * t_mid / max(opacity, eps); "alpha" [R, 1] opacity; "weights" [S];
        "samples" (the ``samples`` given); "num_samples" int.
    """
    ts, te, ri = samples.t_starts, samples.t_ends, samples.ray_indices
    if ri.numel() > 0:
        rgb, sigma = rgb_sigma_fn(ts, te, ri)
        sigma = sigma.reshape(-1)
    else:
        rgb, sigma = ts.new_zeros(0, 3), ts.new_zeros(0)
    weights = weights_fn(sigma, ts, te, ri, n_rays)[0]
    opacity = accumulate_fn(weights, None, ri, n_rays)
    color = accumulate_fn(weights, rgb, ri, n_rays)
    depth = accumulate_fn(weights, (0.5 * (ts + te)).to(weights.dtype)[:, None], ri, n_rays)
    depth = depth / opacity.clamp_min(torch.finfo(opacity.dtype).eps)
    return {
        "rgb": _over_background(color, opacity, background),
        "depth": depth,
        "alpha": opacity,
        "weights": weights,
        "samples": samples,
        "num_samples": int(ri.numel()),
    }


def render_dense(
    rgb_sigma_fn_dense: DenseRgbSigmaFn,
    origins: Tensor,
    dirs: Tensor,
    near: float | Tensor,
    far: float | Tensor,
    n_samples: int,
    background: Tensor | None = None,
) -> dict[str, Tensor]:
    """Reference renderer: every ray sampled at the same uniform t's, no grid, no packing.

    Interval k of a ray is ``[near + k * step, min(near + (k+1) * step, far)]`` with
    ``step = (far - near) / n_samples`` (the positions ``march`` uses for a ray that starts
    inside its box), composited with a per-ray cumprod of (1 - alpha).

    Args:
        rgb_sigma_fn_dense: (t_starts [R, N], t_ends [R, N]) -> (rgb [R, N, 3], sigma [R, N]).
        origins, dirs: [R, 3] (only their count, device and dtype are used here).
        near, far: float or [R]. n_samples: N. background: [3] or [R, 3] or None.
    Returns:
        "rgb" [R, 3], "depth" [R, 1], "alpha" [R, 1], "weights" [R, N], "t_starts" [R, N],
        "t_ends" [R, N].
    """
    n_rays = origins.shape[0]
    opts = {"dtype": origins.dtype, "device": origins.device}
    near_t = torch.as_tensor(near, **opts).expand(n_rays)[:, None]
    far_t = torch.as_tensor(far, **opts).expand(n_rays)[:, None]
    step = (far_t - near_t) / n_samples
    ts = near_t + torch.arange(n_samples, **opts) * step
    te = torch.minimum(ts + step, far_t)
    rgb, sigma = rgb_sigma_fn_dense(ts, te)
    alphas = 1.0 - torch.exp(-sigma.reshape(n_rays, n_samples) * (te - ts))
    trans = torch.cumprod(1.0 - alphas, -1)
    trans = torch.cat([torch.ones_like(trans[:, :1]), trans[:, :-1]], -1)
    weights = trans * alphas
    opacity = weights.sum(-1, keepdim=True)
    color = (weights[..., None] * rgb).sum(-2)
    depth = (weights * 0.5 * (ts + te)).sum(-1, keepdim=True)
    depth = depth / opacity.clamp_min(torch.finfo(opacity.dtype).eps)
    return {
        "rgb": _over_background(color, opacity, background),
        "depth": depth,
        "alpha": opacity,
        "weights": weights,
        "t_starts": ts,
        "t_ends": te,
    }
