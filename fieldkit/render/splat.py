"""Gaussian-splat rasterizer in pure PyTorch: the reference of the CUDA path and of the CPU's
compiled blending (``splat_cpu``, which replaces stage 3 on the CPU where it builds).

One camera at a time, in three stages (the structure of 3DGS and gsplat):

1. ``project``: EWA splatting. Each 3D Gaussian becomes a 2D one in pixels (centre ``means2d``,
   inverse covariance ``conics``) with a low-pass ``eps2d`` added to its covariance, and an exact
   pixel bounding box: the ellipse outside which its alpha is below 1/255. In the antialiased
   mode (Mip-Splatting's 2D filter, gsplat's ``rasterize_mode="antialiased"``) the opacity is
   scaled by sqrt(det(cov2d) / det(cov2d + eps2d I)), so that the low-pass filter keeps a
   Gaussian's total weight instead of inflating small or distant ones.
2. ``bin_tiles``: (tile, Gaussian) intersections sorted by tile, then front to back.
3. ``composite``: batches of tiles. Each intersection expands into the pixels of its bounding
   box inside its tile; pairs whose alpha is below 1/255 are dropped; the rest are grouped per
   pixel (a stable sort keeps them front to back) and composited for all pixels at once with a
   segmented exclusive cumsum of log(1 - alpha), stopping where transmittance would fall below
   1e-4 (as 3DGS). The cost follows the pixels the Gaussians actually cover, never pixels x all
   Gaussians, and autograd gives the backward pass. Views of more than ``KEEP_PAIRS`` box pixels
   (large images, millions of Gaussians) make their pairs again in the backward pass, one
   batch of tiles at a time, so that training memory stays bounded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

ALPHA_MIN = 1.0 / 255.0
"""Pairs fainter than this do not composite (3DGS)."""
ALPHA_MAX = 0.999
"""Upper clamp of a single Gaussian's alpha (gsplat)."""
T_MIN = 1e-4
"""A pixel stops accumulating before its transmittance would fall to this (3DGS)."""
BATCH_PAIRS = 1 << 20
"""Box pixels a batch of tiles of the differentiable path. Smaller tensors than one batch of the
whole view: a fox training step at 270 x 480 took 2.24 s instead of 5.29, at 135 x 240 0.55
instead of 0.80 (``apps/results/splat_memory_cpu``)."""
KEEP_PAIRS = 1 << 25
"""Box pixels of a view up to which the differentiable path keeps every (Gaussian, pixel) pair
for the backward pass (~100 bytes each); above, it makes each batch's pairs again in the
backward pass (``composite``), ~1.4x the step's time for memory bounded by one batch."""
EXTENT_MAX = 3.33
"""Largest bounding-box half-size in standard deviations (alpha of an opaque Gaussian there is
1/255, so this box loses nothing)."""


@dataclass
class Projection:
    """Gaussians seen from one camera. Culled Gaussians have ``radii == 0``."""

    means2d: Tensor
    """[N, 2] pixel position of the centre (pixel (i, j) has its centre at (j + 0.5, i + 0.5))."""
    conics: Tensor
    """[N, 3] (a, b, c) of the inverse 2D covariance: power = -(a dx^2 + c dy^2) / 2 - b dx dy."""
    depths: Tensor
    """[N] camera-space z of the centre."""
    radii: Tensor
    """[N, 2] int64 half-size of the bounding box in pixels along x and y (0: culled)."""
    opacities: Tensor
    """[N] opacity in [0, 1]."""

    @property
    def visible(self) -> Tensor:
        """[N] bool: the Gaussian touches the image."""
        return (self.radii > 0).all(-1)


def quat_scale_to_covar(quats: Tensor, scales: Tensor) -> Tensor:
    """quats [N, 4] (w, x, y, z, any norm), scales [N, 3] (standard deviations) -> [N, 3, 3]."""
    w, x, y, z = (quats / quats.norm(dim=-1, keepdim=True)).unbind(-1)
    R = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(-1, 3, 3)
    M = R * scales[:, None, :]
    return M @ M.transpose(1, 2)


def project(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, viewmat: Tensor,
            K: Tensor, width: int, height: int, near: float = 0.01, far: float = 1e10,
            eps2d: float = 0.3, antialiased: bool = False) -> Projection:
    """EWA projection of N Gaussians through one pinhole camera.

    means [N, 3], quats [N, 4], scales [N, 3] (standard deviations, not logs), opacities [N] in
    [0, 1]; viewmat [4, 4] world-to-camera (OpenCV axes); K [3, 3] intrinsics in pixels.
    ``antialiased``: opacities scaled by the low-pass filter's compensation (see the module).
    """
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    p = means @ R.T + t  # [N, 3]
    x, y, z = p.unbind(-1)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    zs = torch.where(z > near, z, torch.ones_like(z))  # keeps culled ones finite
    # Clamp the point used for the Jacobian to a little beyond the field of view, as 3DGS: the
    # affine approximation explodes for Gaussians far outside it.
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    tx = zs * torch.clamp(x / zs, -(cx / fx + 0.3 * tan_x), (width - cx) / fx + 0.3 * tan_x)
    ty = zs * torch.clamp(y / zs, -(cy / fy + 0.3 * tan_y), (height - cy) / fy + 0.3 * tan_y)
    zero = torch.zeros_like(zs)
    J = torch.stack([fx / zs, zero, -fx * tx / zs ** 2,
                     zero, fy / zs, -fy * ty / zs ** 2], dim=-1).reshape(-1, 2, 3)
    JW = J @ R  # [N, 2, 3]
    cov2d = JW @ quat_scale_to_covar(quats, scales) @ JW.transpose(1, 2)
    a = cov2d[:, 0, 0] + eps2d
    b = cov2d[:, 0, 1]
    c = cov2d[:, 1, 1] + eps2d
    det = a * c - b * b
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    if antialiased:
        det_raw = cov2d[:, 0, 0] * cov2d[:, 1, 1] - b * b
        opacities = opacities * torch.sqrt((det_raw / det_safe).clamp_min(0.0))
    means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], dim=-1)
    with torch.no_grad():
        # Half-size of the box outside which alpha = opacity * exp(-k^2 / 2) < 1/255.
        k = torch.sqrt(2 * torch.log((opacities * 255).clamp_min(1.0))).clamp_max(EXTENT_MAX)
        rx = torch.ceil(k * a.clamp_min(0).sqrt())
        ry = torch.ceil(k * c.clamp_min(0).sqrt())
        mx, my = means2d.unbind(-1)
        ok = ((z > near) & (z < far) & (det > 0) & (opacities >= ALPHA_MIN) & (rx > 0)
              & (ry > 0) & (mx + rx > 0) & (mx - rx < width) & (my + ry > 0)
              & (my - ry < height) & torch.isfinite(mx) & torch.isfinite(my))
        radii = torch.stack([rx, ry], -1).where(ok[:, None], 0.0).long()
    return Projection(means2d, conics, z, radii, opacities)


@dataclass
class TileBins:
    """(tile, Gaussian) intersections sorted by tile, then by depth (front to back)."""

    gaussian: Tensor
    """[M] int64 Gaussian of each intersection."""
    tile: Tensor
    """[M] int64 tile (row-major over a grid of ``tiles_x`` x ``tiles_y``)."""
    offsets: Tensor
    """[tiles_x * tiles_y + 1] int64 start of each tile's intersections."""
    tiles_x: int
    tiles_y: int
    tile_size: int


def pixel_boxes(proj: Projection, width: int, height: int) -> Tensor:
    """[N, 4] int64 (x0, y0, x1, y1), end-exclusive pixel box of each Gaussian in the image."""
    c = proj.means2d.detach()
    r = proj.radii
    x0 = torch.floor(c[:, 0] - r[:, 0]).long().clamp(0, width)
    x1 = torch.ceil(c[:, 0] + r[:, 0]).long().clamp(0, width)
    y0 = torch.floor(c[:, 1] - r[:, 1]).long().clamp(0, height)
    y1 = torch.ceil(c[:, 1] + r[:, 1]).long().clamp(0, height)
    return torch.stack([x0, y0, x1, y1], -1)


def _expand(counts: Tensor) -> tuple[Tensor, Tensor]:
    """counts [M] -> (owner [sum], rank within owner [sum]) for a ragged expansion."""
    owner = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(owner), device=counts.device) - starts[owner]
    return owner, rank


def bin_tiles(proj: Projection, width: int, height: int, tile_size: int = 16) -> TileBins:
    """Every (tile, Gaussian) overlap of the visible Gaussians, sorted by tile then depth."""
    tiles_x, tiles_y = -(-width // tile_size), -(-height // tile_size)
    vis = torch.nonzero(proj.visible).squeeze(1)
    vis = vis[torch.argsort(proj.depths.detach()[vis], stable=True)]  # front to back
    box = pixel_boxes(proj, width, height)[vis]
    tx0, ty0 = box[:, 0] // tile_size, box[:, 1] // tile_size
    ntx = (box[:, 2] - 1) // tile_size + 1 - tx0
    nty = (box[:, 3] - 1) // tile_size + 1 - ty0
    counts = (ntx * nty).clamp_min(0)
    owner, rank = _expand(counts)
    tile = (ty0[owner] + rank // ntx[owner]) * tiles_x + tx0[owner] + rank % ntx[owner]
    order = torch.argsort(tile, stable=True)  # stable: depth order survives within a tile
    tile = tile[order]
    n_tiles = tiles_x * tiles_y
    per_tile = torch.bincount(tile, minlength=n_tiles)
    offsets = torch.cat([per_tile.new_zeros(1), torch.cumsum(per_tile, 0)])
    return TileBins(vis[owner[order]], tile, offsets, tiles_x, tiles_y, tile_size)


def _row_pairs(proj: Projection, bins: TileBins, box: Tensor, lo: int, hi: int, width: int
               ) -> tuple[Tensor, Tensor]:
    """The (Gaussian, pixel) pairs of intersections ``lo:hi`` whose alpha can reach 1/255, in
    intersection order (so front to back within each pixel): ``chord_pairs`` of each
    Gaussian's box cut to its tile."""
    g, tile = bins.gaussian[lo:hi], bins.tile[lo:hi]
    ts = bins.tile_size
    tx0, ty0 = (tile % bins.tiles_x) * ts, (tile // bins.tiles_x) * ts
    b = box[g]
    return chord_pairs(proj, g, torch.maximum(b[:, 0], tx0), torch.minimum(b[:, 2], tx0 + ts),
                       torch.maximum(b[:, 1], ty0), torch.minimum(b[:, 3], ty0 + ts), width)


def chord_pairs(proj: Projection, g: Tensor, x0: Tensor, x1: Tensor, y0: Tensor, y1: Tensor,
                width: int) -> tuple[Tensor, Tensor]:
    """The (Gaussian, pixel) pairs of Gaussians ``g`` [M] inside pixel rectangles [x0, x1) x
    [y0, y1) (each [M]) whose alpha can reach 1/255.

    Row by row, the pixels where alpha >= 1/255 form an interval (the ellipse's chord), solved
    in closed form, so no candidate is generated only to be discarded. The chord is widened by
    a hair; compositing zeroes the few pairs that land below 1/255. Returns gaussian [P] and
    pixel id [P] (row-major), in the order of ``g``, then row, then column.
    """
    row_owner, r = _expand((y1 - y0).clamp_min(0))
    gr = g[row_owner]
    y = y0[row_owner] + r
    m = proj.means2d.detach()[gr]
    a, bb, c = proj.conics.detach()[gr].unbind(-1)
    level = torch.log(proj.opacities.detach()[gr] * 255).clamp_min(0)
    dy = y.to(m.dtype) + 0.5 - m[:, 1]
    # 0.5 a t^2 + (b dy) t + 0.5 c dy^2 <= level, t = pixel centre x - mean x
    disc = (bb * bb - a * c) * dy * dy + 2 * a * level
    root = disc.clamp_min(0).sqrt()
    lo_t, hi_t = (-bb * dy - root) / a, (-bb * dy + root) / a
    xs = torch.maximum(torch.ceil(m[:, 0] + lo_t - 0.5 - 1e-3).long(), x0[row_owner])
    xe = torch.minimum(torch.floor(m[:, 0] + hi_t - 0.5 + 1e-3).long() + 1, x1[row_owner])
    n = torch.where(disc >= 0, xe - xs, 0).clamp_min(0)
    pair_owner, k = _expand(n)
    pix = y[pair_owner] * width + xs[pair_owner] + k
    return gr[pair_owner], pix


def composite(proj: Projection, bins: TileBins, colors: Tensor, width: int, height: int,
              background: Tensor | None = None, batch_pairs: int = BATCH_PAIRS,
              keep_pairs: int | None = None) -> dict[str, Tensor]:
    """Front-to-back alpha compositing of the binned Gaussians (differentiable).

    colors [N, D]; background [D] or None (black). Returns "rgb" [H, W, D], "depth" [H, W, 1]
    (expected camera z of the visible surface) and "alpha" [H, W, 1]. Pairs are found in
    batches of whole tiles of about ``batch_pairs`` box pixels; a batch holds every pair of its
    pixels, so each is composited on its own. Up to ``keep_pairs`` box pixels a view (None:
    ``KEEP_PAIRS``), every pair is kept for the backward pass; above, each batch's pairs are
    made again in the backward pass (``torch.utils.checkpoint``), so memory is bounded by one
    batch (rendering without gradients goes through ``splat_render``).
    """
    d = colors.shape[1]
    per_gaussian = torch.cat([proj.means2d, proj.conics, proj.opacities[:, None],
                              proj.depths[:, None], colors], 1)       # [N, 7 + D], small
    box, bounds, total = _tile_batches(proj, bins, width, height, batch_pairs)
    recompute = total > (KEEP_PAIRS if keep_pairs is None else keep_pairs)
    acc = per_gaussian.new_zeros(height * width, d + 2)
    sums, ids = [], []
    for lo, hi in bounds:
        t_lo, t_hi = int(bins.tile[lo]), int(bins.tile[hi - 1]) + 1
        args = (per_gaussian, proj, bins, box, lo, hi, t_lo, t_hi, width)
        sums.append(checkpoint(_tile_sums, *args, use_reentrant=False) if recompute
                    else _tile_sums(*args))
        ids.append(_tile_pixel_ids(bins, t_lo, t_hi, width, height))
    if sums:
        ids_all, sums_all = torch.cat(ids), torch.cat(sums)
        inside = ids_all >= 0
        acc = acc.index_add(0, ids_all[inside], sums_all[inside])
    return finish(acc, d, width, height, background)


def finish(acc: Tensor, d: int, width: int, height: int, background: Tensor | None
           ) -> dict[str, Tensor]:
    """Per-pixel sums [H * W, D + 2] of weighted colour, weight and weighted depth -> the
    "rgb" [H, W, D] (over ``background``), "depth" [H, W, 1] and "alpha" [H, W, 1] images."""
    rgb, alpha_img, depth = acc[:, :d], acc[:, d], acc[:, d + 1]
    depth = depth / alpha_img.clamp_min(1e-10)
    if background is not None:
        rgb = rgb + (1 - alpha_img)[:, None] * background.to(rgb)
    return {"rgb": rgb.reshape(height, width, d), "depth": depth.reshape(height, width, 1),
            "alpha": alpha_img.reshape(height, width, 1)}


def _tile_batches(proj: Projection, bins: TileBins, width: int, height: int, batch_pairs: int
                  ) -> tuple[Tensor, list[tuple[int, int]], int]:
    """(pixel boxes [N, 4], intersection ranges (lo, hi) of batches of whole tiles of about
    ``batch_pairs`` box pixels, box pixels of all intersections)."""
    with torch.no_grad():
        box = pixel_boxes(proj, width, height)
        ts, n = bins.tile_size, len(bins.gaussian)
        if n == 0:
            return box, [], 0
        tx0 = (bins.tile % bins.tiles_x) * ts
        ty0 = (bins.tile // bins.tiles_x) * ts
        b = box[bins.gaussian]
        area = ((torch.minimum(b[:, 2], tx0 + ts) - torch.maximum(b[:, 0], tx0)).clamp_min(0)
                * (torch.minimum(b[:, 3], ty0 + ts) - torch.maximum(b[:, 1], ty0)).clamp_min(0))
        cum = torch.cumsum(area, 0)
        total = int(cum[-1])
        marks = torch.arange(1, total // batch_pairs + 1, device=cum.device) * batch_pairs
        cuts = bins.offsets[bins.tile[torch.searchsorted(cum, marks).clamp_max(n - 1)]]
        bounds = [0] + torch.unique(cuts).tolist() + [n]
        return box, [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo], total


def _batch_pairs(proj: Projection, bins: TileBins, box: Tensor, lo: int, hi: int, width: int
                 ) -> tuple[Tensor, Tensor]:
    """(gaussian [P], pixel [P]) of intersections ``lo:hi`` (whole tiles), grouped per pixel,
    front to back within a pixel (no gradient needed)."""
    with torch.no_grad():
        g, pix = _row_pairs(proj, bins, box, lo, hi, width)
        order = torch.argsort(pix, stable=True)
        return g[order], pix[order]


def _tile_sums(per_gaussian: Tensor, proj: Projection, bins: TileBins, box: Tensor, lo: int,
               hi: int, t_lo: int, t_hi: int, width: int) -> Tensor:
    """[(t_hi - t_lo) * tile_size^2, D + 2] per-pixel sums (``pair_values``) of intersections
    ``lo:hi``, which are those of tiles ``t_lo:t_hi``, in tile-local pixel order
    (``_tile_pixel_ids``)."""
    g, pix = _batch_pairs(proj, bins, box, lo, hi, width)
    vals, _ = pair_values(per_gaussian, g, pix, width)
    ts = bins.tile_size
    py, px = pix // width, pix % width
    tile = (py // ts) * bins.tiles_x + px // ts
    local = (tile - t_lo) * (ts * ts) + (py % ts) * ts + px % ts
    return vals.new_zeros((t_hi - t_lo) * ts * ts, vals.shape[1]).index_add(0, local, vals)


def _tile_pixel_ids(bins: TileBins, t_lo: int, t_hi: int, width: int, height: int) -> Tensor:
    """[(t_hi - t_lo) * tile_size^2] image pixel of each tile-local pixel of tiles
    ``t_lo:t_hi`` (-1 where the tile passes the image's edge)."""
    ts = bins.tile_size
    dev = bins.tile.device
    tile = torch.arange(t_lo, t_hi, device=dev)[:, None]
    k = torch.arange(ts * ts, device=dev)[None, :]
    py = (tile // bins.tiles_x) * ts + k // ts
    px = (tile % bins.tiles_x) * ts + k % ts
    return torch.where((py < height) & (px < width), py * width + px, -1).reshape(-1)


def pair_values(per_gaussian: Tensor, g: Tensor, pix: Tensor, width: int,
                prior: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Weighted colour, weight and weighted depth [P, D + 2] of pairs grouped per pixel, front
    to back, and their log(1 - alpha) [P] (float64): a segmented exclusive cumsum of
    log(1 - alpha) per pixel, 3DGS's stop at T_MIN. per_gaussian [N, 7 + D]: means2d, conics,
    opacity, depth, colour. ``prior`` [P] float64: the log transmittance each pair's pixel
    already had before these pairs (pixels composited in several passes)."""
    first = torch.ones_like(pix, dtype=torch.bool)
    first[1:] = pix[1:] != pix[:-1]
    seg = torch.cumsum(first.long(), 0) - 1
    starts = torch.nonzero(first).squeeze(1)
    # With gradients, what a pair needs is gathered one column at a time from the [N]
    # per-Gaussian columns: slicing columns out of one gathered [P, 7 + D] tensor made every
    # slice's backward zero-fill a full [P, 7 + D] gradient (45% of a training step's time,
    # measured), and the gathered tensor's cat / split cost another ~20%; per-column gathers
    # scatter their gradients into [N] columns instead.
    if per_gaussian.requires_grad:
        cols = [col.index_select(0, g) for col in per_gaussian.unbind(1)]
        head, pair_colors = cols[:7], torch.stack(cols[7:], 1)      # 7 x [P], [P, D]
    else:   # rendering only: one gather, and no copy of the colours
        feats = per_gaussian.index_select(0, g)
        head, pair_colors = feats[:, :7].unbind(1), feats[:, 7:]
    mx, my, ca, cb, cc, opacity, z = head
    dx = (pix % width).to(mx.dtype) + 0.5 - mx
    dy = (pix // width).to(mx.dtype) + 0.5 - my
    sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
    alpha = (opacity * torch.exp(-sigma)).clamp_max(ALPHA_MAX)
    alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
    log1m = torch.log1p(-alpha.double())
    incl = torch.cumsum(log1m, 0)
    incl = incl - (incl - log1m)[starts][seg]  # per pixel: sum of log(1 - alpha) so far
    if prior is not None:
        incl = incl + prior
    w = alpha * torch.exp(incl - log1m).to(alpha.dtype)
    w = torch.where(incl.detach() > math.log(T_MIN), w, torch.zeros_like(w))  # 3DGS stop
    return torch.cat([w[:, None] * pair_colors, w[:, None], (w * z)[:, None]], 1), log1m


def rasterize(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
              viewmat: Tensor, K: Tensor, width: int, height: int,
              background: Tensor | None = None, near: float = 0.01, far: float = 1e10,
              eps2d: float = 0.3, tile_size: int = 16, batch_pairs: int = BATCH_PAIRS,
              antialiased: bool = False, keep_pairs: int | None = None,
              cpu_blend: bool = False) -> tuple[dict[str, Tensor], Projection]:
    """Render N Gaussians into one camera (pure PyTorch, differentiable).

    means [N, 3], quats [N, 4], scales [N, 3] (standard deviations), opacities [N] in [0, 1],
    colors [N, D]; viewmat [4, 4] world-to-camera (OpenCV); K [3, 3]; background [D] or None.
    Returns ({"rgb" [H, W, D], "depth" [H, W, 1] camera z, "alpha" [H, W, 1]}, projection);
    ``projection.means2d`` carries the view-space gradient densification needs.
    ``antialiased``: gsplat's antialiased mode (``project``). ``keep_pairs``: see ``composite``.
    ``cpu_blend``: blend with the compiled C++ loops (``splat_cpu``; float32 CPU tensors)
    instead of ``composite`` / ``splat_render``, with or without gradients, and project with
    them too (``splat_cpu_project``) unless the camera needs a gradient.
    """
    if cpu_blend and not (viewmat.requires_grad or K.requires_grad):
        from fieldkit.render.splat_cpu_project import project_cpu as projector
    else:   # the torch code also gives the gradient of a camera being optimised
        projector = project
    proj = projector(means, quats, scales, opacities, viewmat, K, width, height, near, far,
                     eps2d, antialiased)
    if cpu_blend:
        from fieldkit.render.splat_cpu import rasterize_cpu

        return rasterize_cpu(proj, colors, width, height, background, tile_size), proj
    if not (torch.is_grad_enabled() and any(
            t.requires_grad for t in (means, quats, scales, opacities, colors))):
        from fieldkit.render.splat_render import BATCH_PAIRS as RENDER_BATCH
        from fieldkit.render.splat_render import render_front_to_back
        return render_front_to_back(proj, colors, width, height, background,
                                    min(batch_pairs, RENDER_BATCH)), proj
    bins = bin_tiles(proj, width, height, tile_size)
    return composite(proj, bins, colors, width, height, background, batch_pairs,
                     keep_pairs), proj
