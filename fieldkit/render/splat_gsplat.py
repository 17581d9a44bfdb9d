"""Gaussian-splat rasterizer on CUDA through gsplat, a drop-in for ``splat.rasterize``.

``rasterize_gsplat`` takes the same arguments and returns the same structures as the pure-torch
``rasterize`` (its twin and reference); gsplat is imported on the first call only, so this module
imports on machines without it. Use ``fieldkit.render.backends.choose_splat_backend`` to decide
which of the two to call. gsplat's kernels run in float32: other dtypes are cast on the way in
and the outputs cast back, and every tensor must be on a CUDA device.

Differences from the torch twin (all at the level of float32 rounding or the 1/255 edge):

- Same rules otherwise: EWA projection with the Jacobian point clamped to 1.3x the field of
  view, ``eps2d`` added to the 2D covariance, the opacity-aware box
  ``ceil(min(3.33, sqrt(2 ln(255 opacity))) * sqrt(cov))`` per axis, Gaussians below 1/255
  opacity culled, pixel centres at +0.5, alpha clamped at 0.999, pairs below 1/255 skipped, a
  pixel stops before its transmittance falls to 1e-4, depth = sum(w z) / max(alpha, 1e-10)
  (gsplat's "ED" mode) and the background weighted by the final transmittance.
- gsplat culls ``z < near or z > far`` (a centre exactly on a plane is kept; the twin drops it),
  uses fast-math ``__expf``/``__logf`` (so a box can differ by one pixel and a pair on the 1/255
  or 1e-4 threshold can flip), keeps transmittance as a running float32 product (the twin sums
  float64 logs), and tests every pixel of each tile a box touches against the 1/255 threshold
  (the twin only the box's pixels; the box encloses that region, so only the edge differs).
- ``batch_pairs``, ``keep_pairs`` and ``cpu_blend`` are accepted for signature parity and
  ignored (gsplat manages its memory, and blends on the GPU).
- The ``Projection`` is camera 0 of gsplat's ``meta`` with culled Gaussians' means2d, conics
  and depths set to 0 (gsplat leaves them uninitialised) and radii as [N, 2] int64.
  ``means2d`` is derived from ``meta["means2d"]`` ([1, N, 2], the tensor the kernels consumed)
  but is not itself on the path from the loss, so a gradient hook on ``meta["means2d"]`` copies
  camera 0's gradient into ``proj.means2d.grad`` once ``proj.means2d.retain_grad()`` has been
  called: the trainer reads it exactly as from the twin.
"""
from __future__ import annotations

import weakref

import torch
from torch import Tensor

from fieldkit.errors import FieldkitError
from fieldkit.render.splat import BATCH_PAIRS, Projection


def _mirror_grad(full: Tensor, target: Tensor) -> Tensor:
    """Make ``target`` ([N, ...], derived from ``full`` [1, N, ...] but off the loss path) get
    ``full``'s gradient of camera 0 in its ``.grad`` once ``retain_grad()`` was called on it, as
    if it were the tensor the loss used. Returns ``target``."""
    if not full.requires_grad:
        return target
    ref = weakref.ref(target)  # no cycle target -> full -> hook -> target

    def hook(grad: Tensor) -> None:
        t = ref()
        if t is not None and t.retains_grad:
            g = grad[0].detach().to(t.dtype)
            t.grad = g.clone() if t.grad is None else t.grad + g

    full.register_hook(hook)
    return target


def _radii_n2(radii: Tensor) -> Tensor:
    """gsplat radii of camera 0 as [N, 2] int64: [C, N, 2] (gsplat >= 1.5) or [C, N] (older)."""
    r = radii[0].long()
    return r if r.dim() == 2 else torch.stack([r, r], -1)


def rasterize_gsplat(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor,
                     colors: Tensor, viewmat: Tensor, K: Tensor, width: int, height: int,
                     background: Tensor | None = None, near: float = 0.01, far: float = 1e10,
                     eps2d: float = 0.3, tile_size: int = 16, batch_pairs: int = BATCH_PAIRS,
                     antialiased: bool = False, keep_pairs: int | None = None,
                     cpu_blend: bool = False) -> tuple[dict[str, Tensor], Projection]:
    """Render N Gaussians into one camera with gsplat's CUDA kernels (differentiable).

    means [N, 3], quats [N, 4], scales [N, 3] (standard deviations), opacities [N] in [0, 1],
    colors [N, D]; viewmat [4, 4] world-to-camera (OpenCV); K [3, 3]; background [D] or None.
    Returns ({"rgb" [H, W, D], "depth" [H, W, 1] camera z, "alpha" [H, W, 1]}, projection);
    ``projection.means2d`` carries the view-space gradient densification needs.
    ``antialiased``: gsplat's ``rasterize_mode="antialiased"``.
    """
    try:
        from gsplat import rasterization
    except Exception as err:
        raise FieldkitError(f"the CUDA splat rasterizer needs gsplat ({err}); pip install "
                            "gsplat, or use the 'torch' splat backend") from None
    del batch_pairs, keep_pairs  # the torch twin's memory knobs; gsplat has its own
    dtype, dev = means.dtype, means.device

    def f32(t: Tensor) -> Tensor:
        return t.to(device=dev, dtype=torch.float32).contiguous()

    d = colors.shape[-1]
    bg = None if background is None else f32(background.reshape(1, d))
    render, alphas, meta = rasterization(
        f32(means), f32(quats), f32(scales), f32(opacities), f32(colors),
        f32(viewmat)[None], f32(K)[None], int(width), int(height),
        near_plane=near, far_plane=far, eps2d=eps2d, tile_size=tile_size,
        render_mode="RGB+ED", backgrounds=bg, packed=False,
        rasterize_mode="antialiased" if antialiased else "classic",
        sh_degree=None)
    # render [1, H, W, D + 1]: the colours then the expected depth; alphas [1, H, W, 1].
    out = {"rgb": render[0, ..., :d].to(dtype), "depth": render[0, ..., d:].to(dtype),
           "alpha": alphas[0].to(dtype)}
    # gsplat leaves means2d, conics and depths of culled Gaussians uninitialised: zero them.
    radii = _radii_n2(meta["radii"])
    seen = (radii > 0).all(-1)

    def keep(t: Tensor) -> Tensor:
        return torch.where(seen.view(-1, *[1] * (t.dim() - 2)), t[0], 0).to(dtype)

    proj = Projection(means2d=_mirror_grad(meta["means2d"], keep(meta["means2d"])),
                      conics=keep(meta["conics"]), depths=keep(meta["depths"]), radii=radii,
                      opacities=meta["opacities"][0].to(dtype))
    return out, proj
