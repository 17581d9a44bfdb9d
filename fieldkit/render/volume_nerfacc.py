"""Volume rendering on CUDA through nerfacc: drop-ins for ``volume.march`` and
``composite.render_rays`` (their twins and references).

nerfacc is imported on the first call only, so this module imports on machines without it; use
``fieldkit.render.backends.choose_volume_backend`` to decide which pair to call. nerfacc's
kernels are float32 only: rays, boxes and scans are cast to float32 on the way in (samples come
back in the rays' dtype, weights in the colours' dtype), and every tensor must be on CUDA.

Grid layout: ``traverse_grids`` reads ``binaries[level, i, j, k]`` at flat index
``(i * Ry + j) * Rz + k`` with i along x, and puts a point p in cell
``trunc((p - min) / (max - min) * R)``: the layout and cell bounds of ``OccupancyGrid``, so
``grid.binary[None]`` and ``grid.aabb[None]`` go in as they are.

How ``march_nerfacc`` is made to agree with ``volume.march``:

- nerfacc lays its samples at ``near_plane + k * step`` (near 0 by default), not from the box
  entry. We pass march's own ``t0 = max(t_near_aabb, near)`` (plus the same ``rand_like``
  jitter when ``stratified``: the same RNG state gives the same jitter) and ``t1 = min(t_far,
  far)`` as per-ray near/far planes, so both lattices start at t0.
- nerfacc advances t by repeated float32 additions (drift up to ~k ulp). We only read the step
  index back, ``k = round((t_mid - t0) / step - 1/2)``, and rebuild ``t_starts = t0 + k * step``,
  ``t_ends = min(t_starts + step, t1)`` with march's formula: t's are bitwise march's (exact
  while the drift stays under half a step, i.e. for any box of sane size).
- A ray's last interval: march keeps it when longer than 1e-4 step (so a ray whose box span is
  below one step still gets one sample), clipped at t1 and tested at its clipped midpoint;
  nerfacc emits it only when longer than half a step, unclipped (it ends past t1) and tested at
  the unclipped midpoint. We drop nerfacc's and add march's own.
- Every sample is then tested again with ``grid.occupied_at`` at march's own midpoint (one
  gather per sample), so a sample nerfacc put in an occupied cell by float32 rounding, that
  march puts in an empty one, is dropped: the result is a subset of march's samples (before
  pruning).

Differences that remain:

- A midpoint within float32 rounding (~1e-6 of the box) of a cell face may be skipped by
  nerfacc (its float32 DDA with drifting t puts it in an empty neighbour cell) where march
  keeps it: a few in 1e5 samples at grid resolution 32, proportionally more when finer.
- Rays grazing an edge or corner of the box, or parallel to an axis and exactly on a face
  plane: nerfacc's slab test (products with 1/dir, where 0 * inf is NaN) may call them a miss
  where ``ray_aabb`` finds a short span (then only our last interval remains), or the reverse.
- Pruning (``sigma_fn``): nerfacc's transmittance is a float32 per-ray scan, march's a float64
  cumsum, so a sample whose transmittance or alpha is within ~1e-6 (relative) of
  ``early_stop_eps`` / ``alpha_thre`` can be kept by one and dropped by the other.
- No ``max_samples_per_ray`` / ``max_candidates``: nerfacc sizes its own buffers (two passes).
"""
from __future__ import annotations

import torch
from torch import Tensor

from fieldkit.errors import FieldkitError
from fieldkit.render.composite import RgbSigmaFn, render_rays
from fieldkit.render.occupancy import OccupancyGrid
from fieldkit.render.volume import (_STEP_TOL, MAX_CANDIDATES, RaySamples, SigmaFn, midpoints,
                                    packed_info_from, ray_aabb)


def _nerfacc():
    try:
        import nerfacc
    except Exception as err:
        raise FieldkitError(f"the CUDA volume renderer needs nerfacc ({err}); pip install "
                            "nerfacc, or use the 'torch' volume backend") from None
    return nerfacc


def _f32(t: Tensor) -> Tensor:
    return t.to(torch.float32).contiguous()


@torch.no_grad()
def march_nerfacc(
    origins: Tensor,
    dirs: Tensor,
    grid: OccupancyGrid | None,
    *,
    near: float = 0.0,
    far: float = 1e10,
    step_size: float,
    aabb: Tensor,
    sigma_fn: SigmaFn | None = None,
    early_stop_eps: float = 1e-4,
    alpha_thre: float = 0.0,
    stratified: bool = False,
    chunk: int = MAX_CANDIDATES,
) -> RaySamples:
    """``volume.march`` with nerfacc's ``traverse_grids`` (see the module docstring for where
    the samples may differ).

    Args:
        origins, dirs: [R, 3] on CUDA. grid: occupancy grid (None: the whole box is occupied).
        near, far: clip of t. step_size: step in t units. aabb: [6] box to march through.
        sigma_fn: (t_starts [S], t_ends [S], ray_indices [S]) -> sigmas [S], evaluated without
            grad in chunks of ``chunk`` samples; samples with transmittance < early_stop_eps,
            or (alpha_thre > 0) alpha < alpha_thre, are dropped
            (``nerfacc.render_visibility_from_density``).
        stratified: jitter each ray's start by U[0, 1) * step, as march does.
    Returns:
        RaySamples (ray_indices [S] int64 sorted, t_starts [S], t_ends [S], packed_info [R, 2]).
    """
    nerfacc = _nerfacc()
    if step_size <= 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    n_rays, device = origins.shape[0], origins.device
    # t0, t1 and the step count exactly as volume.march computes them (same RNG call).
    t_near, t_far = ray_aabb(origins, dirs, aabb)
    t_near, t_far = t_near.clamp_min(near), t_far.clamp_max(far)
    if stratified:
        t_near = t_near + torch.rand_like(t_near) * step_size
    span = t_far - t_near
    steps = torch.where(span > 0, torch.ceil(span / step_size - _STEP_TOL), 0.0)
    steps = steps.clamp_min(0).long()
    active = steps > 0  # rays without steps get near = far = 0: nerfacc skips them (no NaN/inf)
    zero = torch.zeros_like(t_near)
    if grid is None:
        binaries = torch.ones(1, 1, 1, 1, dtype=torch.bool, device=device)
        box = torch.as_tensor(aabb).to(device)
    else:
        binaries, box = grid.binary[None], grid.aabb
    _, found, _ = nerfacc.traverse_grids(
        _f32(origins), _f32(dirs), binaries.contiguous(), _f32(box.reshape(1, 6)),
        near_planes=_f32(torch.where(active, t_near, zero)),
        far_planes=_f32(torch.where(active, t_far, zero)), step_size=float(step_size))

    # nerfacc's samples -> step indices; its last interval (k >= steps - 1) is replaced below.
    ray = found.ray_indices.long()
    k = torch.round((found.vals.to(t_near.dtype) - t_near[ray]) / step_size - 0.5).long()
    inner = torch.nonzero((k >= 0) & (k < steps[ray] - 1))[:, 0]
    ray, k = ray[inner], k[inner]
    last_ray = torch.nonzero(active)[:, 0]
    ray = torch.cat([ray, last_ray])
    k = torch.cat([k, steps[last_ray] - 1])
    t_starts = t_near.index_select(0, ray) + k.to(t_near.dtype) * step_size
    t_ends = torch.minimum(t_starts + step_size, t_far.index_select(0, ray))
    if grid is not None:  # march's own occupancy test, at its midpoints (see the docstring)
        sel = torch.nonzero(grid.occupied_at(midpoints(origins, dirs, t_starts, t_ends, ray)))
        ray, t_starts, t_ends = ray[sel[:, 0]], t_starts[sel[:, 0]], t_ends[sel[:, 0]]
    # Stable sort by ray: each ray's inner samples (already in k order) then its last one.
    order = torch.sort(ray, stable=True).indices
    ray, t_starts, t_ends = ray[order], t_starts[order], t_ends[order]
    packed_info = packed_info_from(ray, n_rays)

    if sigma_fn is not None and ray.numel() > 0:
        sigmas = torch.cat([sigma_fn(a, b, c).reshape(-1) for a, b, c in zip(
            t_starts.split(chunk), t_ends.split(chunk), ray.split(chunk))])
        vis = nerfacc.render_visibility_from_density(
            _f32(t_starts), _f32(t_ends), _f32(sigmas), packed_info=packed_info,
            early_stop_eps=early_stop_eps, alpha_thre=alpha_thre)
        sel = torch.nonzero(vis)[:, 0]
        ray, t_starts, t_ends = ray[sel], t_starts[sel], t_ends[sel]
        packed_info = packed_info_from(ray, n_rays)
    return RaySamples(ray, t_starts, t_ends, packed_info)


def render_rays_nerfacc(
    rgb_sigma_fn: RgbSigmaFn,
    samples: RaySamples,
    n_rays: int,
    background: Tensor | None = None,
) -> dict[str, Tensor | int]:
    """``composite.render_rays`` with nerfacc's weights (float32 per-ray scans on CUDA).

    Args:
        rgb_sigma_fn: (t_starts [S], t_ends [S], ray_indices [S]) -> (rgb [S, 3], sigma [S]);
            not called when there are no samples.
        samples: packed samples (``march`` or ``march_nerfacc``); packed_info must have n_rays
            rows. n_rays: R. background: [3] or [R, 3] or None (black).
    Returns:
        "rgb" [R, 3], "depth" [R, 1] (sum w t_mid / max(opacity, eps)), "alpha" [R, 1],
        "weights" [S], "num_samples" int: the contract of ``composite.render_rays``.
    """
    nerfacc = _nerfacc()
    packed_info = samples.packed_info
    if packed_info.shape != (n_rays, 2):
        raise ValueError(f"packed_info has shape {tuple(packed_info.shape)}, want ({n_rays}, 2)")
    packed_info = packed_info.long().contiguous()

    def weights_fn(sigma: Tensor, t0: Tensor, t1: Tensor, ray_idx: Tensor, n: int):
        w, _, _ = nerfacc.render_weight_from_density(_f32(t0), _f32(t1), _f32(sigma),
                                                     packed_info=packed_info)
        return (w.to(sigma.dtype),)

    return render_rays(rgb_sigma_fn, samples, n_rays, background, weights_fn,
                       nerfacc.accumulate_along_rays)
