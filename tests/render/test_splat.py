"""The pure-torch splat rasterizer: projection and compositing against hand-worked values, and the
tiled rasterizer against a dense front-to-back reference (forward and gradients)."""
from __future__ import annotations

import math

import pytest
import torch

from fieldkit.render.splat import (ALPHA_MAX, ALPHA_MIN, T_MIN, bin_tiles, project,
                                   quat_scale_to_covar, rasterize)

IDENTITY_Q = [1.0, 0.0, 0.0, 0.0]


def camera(width: int, height: int, f: float, dtype=torch.float64):
    """Camera at the origin looking down +z: viewmat identity."""
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=dtype)
    return torch.eye(4, dtype=dtype), K


def gaussians(means, scales, opacities, colors, quats=None, dtype=torch.float64):
    n = len(means)
    t = lambda v: torch.tensor(v, dtype=dtype)  # noqa: E731
    q = t(quats) if quats is not None else t([IDENTITY_Q] * n)
    return t(means), q, t(scales), t(opacities), t(colors)


def dense_reference(proj, colors, width, height, background):
    """Every pixel against every visible Gaussian, one Gaussian at a time front to back, with
    3DGS's rules written out (skip alpha < 1/255, clamp at ALPHA_MAX, stop before T <= 1e-4)."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=colors.dtype) + 0.5,
                            torch.arange(width, dtype=colors.dtype) + 0.5, indexing="ij")
    T = torch.ones(height, width, dtype=colors.dtype)
    done = torch.zeros(height, width, dtype=torch.bool)
    rgb = torch.zeros(height, width, colors.shape[1], dtype=colors.dtype)
    depth = torch.zeros(height, width, dtype=colors.dtype)
    for i in torch.argsort(proj.depths.detach()).tolist():
        if not bool(proj.visible[i]):
            continue
        dx, dy = xs - proj.means2d[i, 0], ys - proj.means2d[i, 1]
        a, b, c = proj.conics[i]
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        alpha = (proj.opacities[i] * torch.exp(-sigma)).clamp_max(ALPHA_MAX)
        alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_MIN), alpha, 0.0)
        next_T = T * (1 - alpha)
        stop = (alpha > 0) & (next_T <= T_MIN)
        use = ~done & ~stop
        w = torch.where(use, alpha * T, 0.0)
        rgb = rgb + w[..., None] * colors[i]
        depth = depth + w * proj.depths[i]
        T = torch.where(use, next_T, T)
        done = done | stop
    acc = 1 - T
    return {"rgb": rgb + T[..., None] * background, "alpha": acc[..., None],
            "depth": (depth / acc.clamp_min(1e-10))[..., None]}


# ---------------------------------------------------------------------- hand-worked values
def test_projection_of_one_isotropic_gaussian():
    view, K = camera(10, 10, f=20.0)
    means, quats, scales, opac, _ = gaussians([[0.1, -0.05, 2.0]], [[0.05] * 3], [0.8], [[1, 0, 0]])
    p = project(means, quats, scales, opac, view, K, 10, 10)
    # centre: f x / z + c; covariance: J S J^T with J = f / z on the diagonal plus the
    # x / z terms: cov_xx = (f/z)^2 s^2 + (f x / z^2)^2 s^2, cov_xy = (f/z^2)^2 x y s^2.
    assert p.means2d[0].tolist() == pytest.approx([20 * 0.1 / 2 + 5, 20 * -0.05 / 2 + 5])
    s2, z, x, y, f = 0.05 ** 2, 2.0, 0.1, -0.05, 20.0
    cxx = (f / z) ** 2 * s2 + (f * x / z ** 2) ** 2 * s2 + 0.3
    cyy = (f / z) ** 2 * s2 + (f * y / z ** 2) ** 2 * s2 + 0.3
    cxy = f * f * x * y / z ** 4 * s2
    det = cxx * cyy - cxy ** 2
    assert p.conics[0].tolist() == pytest.approx([cyy / det, -cxy / det, cxx / det], rel=1e-9)
    k = math.sqrt(2 * math.log(0.8 * 255))  # alpha reaches 1/255 at k standard deviations
    assert p.radii[0].tolist() == [math.ceil(k * math.sqrt(cxx)), math.ceil(k * math.sqrt(cyy))]
    assert p.depths[0] == pytest.approx(2.0)


def test_rotated_anisotropic_covariance():
    # 90 degrees about z swaps the x and y standard deviations
    q = [math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)]
    cov = quat_scale_to_covar(torch.tensor([q], dtype=torch.float64),
                              torch.tensor([[0.3, 0.1, 0.2]], dtype=torch.float64))[0]
    assert torch.allclose(cov, torch.diag(torch.tensor([0.01, 0.09, 0.04], dtype=torch.float64)))


def test_culling_behind_near_and_outside():
    view, K = camera(16, 16, f=16.0)
    means, quats, scales, opac, _ = gaussians(
        [[0, 0, -1.0], [0, 0, 0.001], [50, 0, 1.0], [0, 0, 2.0], [0, 0, 3.0]], [[0.1] * 3] * 5,
        [0.9, 0.9, 0.9, 0.9, 0.001], [[1, 1, 1]] * 5)
    p = project(means, quats, scales, opac, view, K, 16, 16)
    # behind, at the near plane, far outside the image, visible, too faint to ever show
    assert p.visible.tolist() == [False, False, False, True, False]


def test_composite_two_gaussians_front_to_back():
    view, K = camera(9, 9, f=9.0)
    # Two nearly flat, large Gaussians centred on the middle pixel, red in front of green.
    means, quats, scales, opac, colors = gaussians(
        [[0, 0, 2.0], [0, 0, 3.0]], [[1.0, 1.0, 1e-3]] * 2, [0.6, 0.5], [[1, 0, 0], [0, 1, 0]])
    out, p = rasterize(means, quats, scales, opac, colors, view, K, 9, 9,
                       background=torch.tensor([0, 0, 1.0], dtype=torch.float64))
    a = [float(p.opacities[i] * torch.exp(-0.5 * (p.conics[i, 0] * 0.0))) for i in range(2)]
    # the centre pixel (4, 4) has its centre at (4.5, 4.5) = the projected mean
    expected = [a[0], (1 - a[0]) * a[1], (1 - a[0]) * (1 - a[1])]
    assert out["rgb"][4, 4].tolist() == pytest.approx(expected, rel=1e-6)
    assert out["alpha"][4, 4, 0].item() == pytest.approx(1 - expected[2], rel=1e-6)
    w = [a[0], (1 - a[0]) * a[1]]
    assert out["depth"][4, 4, 0].item() == pytest.approx((2 * w[0] + 3 * w[1]) / sum(w))


def test_composite_stops_before_transmittance_vanishes():
    view, K = camera(5, 5, f=5.0)
    means, quats, scales, opac, colors = gaussians(
        [[0, 0, 2.0], [0, 0, 3.0], [0, 0, 4.0]], [[1.0, 1.0, 1e-3]] * 3, [1.0, 1.0, 1.0],
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    out, _ = rasterize(means, quats, scales, opac, colors, view, K, 5, 5,
                       background=torch.zeros(3, dtype=torch.float64))
    # first: alpha 0.999, T -> 1e-3 (kept); second would take T to 1e-6 <= 1e-4: stop there
    assert out["rgb"][2, 2].tolist() == pytest.approx([ALPHA_MAX, 0, 0], abs=1e-9)


# ---------------------------------------------------------------------- tiled == dense
def random_scene(n: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    means = torch.cat([(torch.rand(n, 2, generator=g, dtype=dtype) - 0.5) * 1.6,
                       2 + 2 * torch.rand(n, 1, generator=g, dtype=dtype)], 1)
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.exp(torch.randn(n, 3, generator=g, dtype=dtype) * 0.5 - 2.5)
    opac = torch.rand(n, generator=g, dtype=dtype) * 0.9 + 0.05
    colors = torch.rand(n, 3, generator=g, dtype=dtype)
    return means, quats, scales, opac, colors


@pytest.mark.parametrize("seed,tile,batch,keep", [
    (0, 16, 1 << 22, None), (1, 8, 64, None), (2, 4, 1 << 22, None),
    (3, 8, 64, 0), (4, 16, 1 << 22, 0)])      # keep 0: every batch made again in backward
def test_tiled_matches_dense_forward_and_backward(seed, tile, batch, keep):
    W, H = 37, 29
    view, K = camera(W, H, f=30.0)
    params = [t.requires_grad_(True) for t in random_scene(40, seed)]
    bg = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    out, proj = rasterize(*params, view, K, W, H, background=bg, tile_size=tile,
                          batch_pairs=batch, keep_pairs=keep)
    assert proj.visible.sum() > 20
    ref = dense_reference(proj, params[4], W, H, bg)
    for key in ("rgb", "alpha", "depth"):
        assert torch.allclose(out[key], ref[key], atol=1e-10), key
    g = torch.Generator().manual_seed(seed + 10)
    up = {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in out.items()}
    ours = torch.autograd.grad(sum((out[k] * up[k]).sum() for k in up), params,
                               retain_graph=True)
    theirs = torch.autograd.grad(sum((ref[k] * up[k]).sum() for k in up), params)
    for name, a, b in zip(("means", "quats", "scales", "opacities", "colors"), ours, theirs):
        assert torch.allclose(a, b, atol=1e-8, rtol=1e-6), name
        assert a.abs().sum() > 0, name


@pytest.mark.parametrize("tile,batch", [(8, 64), (4, 1 << 22)])
def test_render_without_grad_goes_front_to_back_in_batches(tile, batch, monkeypatch):
    """Without gradients the Gaussians are composited in depth-sorted batches over the
    transmittance carried from the batches in front, each batch dropped before the next, so a
    3DGS file of millions of Gaussians renders in bounded memory; the image is the same."""
    import fieldkit.render.splat_render as render_mod
    W, H = 37, 29
    view, K = camera(W, H, f=30.0)
    params = random_scene(200, 3)
    bg = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    sizes, pair_values = [], render_mod.pair_values
    monkeypatch.setattr(render_mod, "pair_values",
                        lambda pg, g, *a, **k: sizes.append(len(g)) or pair_values(pg, g, *a, **k))
    with torch.no_grad():
        out, proj = rasterize(*params, view, K, W, H, background=bg, tile_size=tile,
                              batch_pairs=batch)
    ref = dense_reference(proj, params[4], W, H, bg)
    for key in ("rgb", "alpha", "depth"):
        assert torch.allclose(out[key], ref[key], atol=1e-10), key
    if batch == 64:
        assert len(sizes) > 10 and max(sizes) < 64 + W * H
    else:
        assert len(sizes) == 1


def test_render_without_grad_skips_what_opaque_gaussians_hide(monkeypatch):
    """Behind a wall of opaque Gaussians nothing is composited (3DGS's stop), and the
    Gaussians behind it are skipped before their pairs are made; same image as the dense
    reference."""
    import fieldkit.render.splat_render as render_mod
    W, H = 32, 32
    view, K = camera(W, H, f=30.0)
    g = torch.Generator().manual_seed(4)
    n = 144
    side = torch.linspace(-0.8, 0.8, 12, dtype=torch.float64)
    xy = torch.stack(torch.meshgrid(side, side, indexing="ij"), -1).reshape(-1, 2)
    depth = 1.0 + 1e-3 * torch.arange(n, dtype=torch.float64)[:, None]   # no ties in order
    wall = [torch.cat([xy, depth], 1),
            torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64).expand(n, 4),
            torch.full((n, 3), 0.25, dtype=torch.float64),
            torch.full((n,), 0.999, dtype=torch.float64)]
    behind = random_scene(300, 5)
    behind[0][:, 2] += 3.0
    means, quats, scales, opac = (torch.cat([a, b]) for a, b in zip(wall, behind[:4]))
    colors = torch.cat([torch.rand(n, 3, generator=g, dtype=torch.float64), behind[4]])
    black = torch.zeros(3, dtype=torch.float64)
    made = []
    chord = render_mod.chord_pairs
    monkeypatch.setattr(render_mod, "chord_pairs",
                        lambda proj, gi, *a: made.append(gi) or chord(proj, gi, *a))
    with torch.no_grad():
        out, proj = rasterize(means, quats, scales, opac, colors, view, K, W, H,
                              background=black, batch_pairs=256)
    ref = dense_reference(proj, colors, W, H, black)
    for key in ("rgb", "alpha", "depth"):
        assert torch.allclose(out[key], ref[key], atol=1e-10), key
    with torch.no_grad():
        alone, _ = rasterize(*(t[:n] for t in (means, quats, scales, opac, colors)), view, K,
                             W, H, background=black)
    # behind the wall, only what its last transmittance lets through
    diff = (out["rgb"] - alone["rgb"]).abs().amax(-1)
    assert (diff <= 1 - alone["alpha"][..., 0] + 1e-12).all()
    drawn = torch.cat(made)
    assert int(proj.visible[n:].sum()) > 200
    assert int((drawn >= n).sum()) < 0.1 * int(proj.visible[n:].sum())


@pytest.mark.parametrize("keep", [None, 0])
def test_opaque_stacks_match_dense_gradients(keep):
    """Gaussians stacked in front of each other, the nearest opaque past ALPHA_MAX: gradients
    through the alpha clamp and 3DGS's stop, against the dense reference's (pairs kept for the
    backward pass, or made again there)."""
    W, H = 24, 20
    view, K = camera(W, H, f=20.0)
    means, quats, scales, opac, colors = random_scene(30, 7)
    means[:, :2] *= 0.15                            # all near the optical axis
    scales = scales + 0.05                          # wide enough to cover many pixels
    # the nearest the most opaque: its alpha is clamped where later pairs still composite
    opac = torch.linspace(0.99999, 0.9, 30, dtype=torch.float64)[
        torch.argsort(torch.argsort(means[:, 2]))]
    near = int(torch.argmin(means[:, 2]))
    means[near, :2] = 0.5 / 20.0 * means[near, 2]   # onto a pixel centre: alpha 0.99999
    params = [t.requires_grad_(True) for t in (means, quats, scales, opac, colors)]
    bg = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    out, proj = rasterize(*params, view, K, W, H, background=bg, batch_pairs=256,
                          keep_pairs=keep)
    ref = dense_reference(proj, params[4], W, H, bg)
    assert out["alpha"].max() > 1 - 1e-3       # layers enough to reach the stop
    for key in ("rgb", "alpha", "depth"):
        assert torch.allclose(out[key], ref[key], atol=1e-10), key
    up = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(3), dtype=v.dtype)
          for k, v in out.items()}
    ours = torch.autograd.grad(sum((out[k] * up[k]).sum() for k in up), params,
                               retain_graph=True)
    theirs = torch.autograd.grad(sum((ref[k] * up[k]).sum() for k in up), params)
    for name, a, b in zip(("means", "quats", "scales", "opacities", "colors"), ours, theirs):
        assert torch.allclose(a, b, atol=1e-8, rtol=1e-6), name


def test_views_over_the_pair_budget_keep_no_pairs_for_backward():
    """Above ``keep_pairs`` box pixels the autograd graph holds per-Gaussian and per-pixel
    tensors only (each batch's pairs are made again in the backward pass); below, it holds
    every pair. Both give the same image and gradients, and so do the per-pixel gradients of
    means2d that densification reads."""
    W, H = 96, 80
    view, K = camera(W, H, f=60.0)
    means, quats, scales, opac, colors = random_scene(300, 11)
    scales = scales + 0.04                          # ~10^5 pairs
    results = {}
    for keep in (1 << 40, 0):
        params = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors)]
        saved = []

        def pack(t):
            saved.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out, proj = rasterize(*params, view, K, W, H, batch_pairs=2048, keep_pairs=keep)
        proj.means2d.retain_grad()
        (out["rgb"].square().sum() + out["depth"].sum()).backward()
        results[keep] = (sum(saved), out, [p.grad for p in params] + [proj.means2d.grad])
    (kept, out_k, grads_k), (bounded, out_b, grads_b) = results[1 << 40], results[0]
    assert kept > 300 * W * H, "the scene must have many pairs a pixel"
    assert bounded < 40 * W * H, (bounded, kept)     # measured: 25 values a pixel
    for key in out_k:
        assert torch.equal(out_k[key], out_b[key]), key
    for a, b in zip(grads_k, grads_b):
        assert torch.allclose(a, b, atol=1e-12, rtol=1e-9)


def test_bins_cover_every_visible_gaussian_in_depth_order():
    W, H = 64, 48
    view, K = camera(W, H, f=50.0)
    means, quats, scales, opac, _ = random_scene(200, 3)
    proj = project(means, quats, scales, opac, view, K, W, H)
    bins = bin_tiles(proj, W, H, tile_size=16)
    assert set(bins.gaussian.tolist()) == set(torch.nonzero(proj.visible).squeeze(1).tolist())
    for t in range(bins.tiles_x * bins.tiles_y):
        d = proj.depths[bins.gaussian[bins.offsets[t]:bins.offsets[t + 1]]]
        assert torch.all(d[1:] >= d[:-1])
    assert int(bins.offsets[-1]) == len(bins.gaussian)


def test_empty_and_all_culled_scenes_render_background():
    view, K = camera(8, 6, f=8.0)
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    for n in (0, 3):
        means = torch.zeros(n, 3, dtype=torch.float64) - 1  # behind the camera
        out, _ = rasterize(means, torch.ones(n, 4, dtype=torch.float64),
                           torch.full((n, 3), 0.1, dtype=torch.float64),
                           torch.full((n,), 0.5, dtype=torch.float64),
                           torch.ones(n, 3, dtype=torch.float64), view, K, 8, 6, background=bg)
        assert out["rgb"].shape == (6, 8, 3)
        assert torch.allclose(out["rgb"], bg.expand(6, 8, 3))
        assert out["alpha"].abs().max() == 0


def _window_and_view(params, x0, y0, w, h, W=37, H=29):
    view, K = camera(W, H, f=30.0)
    bg = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    full, _ = rasterize(*params, view, K, W, H, background=bg, tile_size=8)
    Kw = K.clone()
    Kw[0, 2] -= x0
    Kw[1, 2] -= y0
    win, proj = rasterize(*params, view, Kw, w, h, background=bg, tile_size=8)
    return win, {k: v[y0:y0 + h, x0:x0 + w] for k, v in full.items()}, proj


@pytest.mark.parametrize("inside", [True, False])
def test_a_window_renders_as_the_same_pixels_of_the_whole_view(inside):
    # A splat training step can draw a window of its view (``SplatConfig.step_pixels``) through a
    # camera whose principal point moved. Its pixels and their gradients are the view's, but
    # for 3DGS's clamp of the projection's Jacobian, taken at 1.3x the window's field of view
    # (as gsplat's patches do): Gaussians centred beyond it differ a little (``inside=False``).
    x0, y0, w, h = 20, 4, 14, 12
    scene = random_scene(40, 5)
    if inside:      # only Gaussians centred within the window's clamp
        px = 30.0 * scene[0][:, :2] / scene[0][:, 2:] + torch.tensor([18.5, 14.5])
        keep = ((px[:, 0] > x0 + 1) & (px[:, 0] < x0 + w - 1)
                & (px[:, 1] > y0 + 1) & (px[:, 1] < y0 + h - 1))
        assert int(keep.sum()) >= 2
        scene = [t[keep] for t in scene]
    params = [t.requires_grad_(True) for t in scene]
    win, full, proj = _window_and_view(params, x0, y0, w, h)
    if not inside:
        assert 0 < int(proj.visible.sum()) < 40     # some Gaussians lie outside the window
    atol = 1e-10 if inside else 5e-3
    for key in ("rgb", "alpha", "depth"):
        assert torch.allclose(win[key], full[key], atol=atol if key != "depth" else 10 * atol)
    up = torch.randn(h, w, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ours = torch.autograd.grad((win["rgb"] * up).sum(), params, retain_graph=True)
    theirs = torch.autograd.grad((full["rgb"] * up).sum(), params)
    for name, a, b in zip(("means", "quats", "scales", "opacities", "colors"), ours, theirs):
        if inside:
            assert torch.allclose(a, b, atol=1e-8, rtol=1e-6), name
        else:
            assert (a - b).norm() <= 0.05 * b.norm(), name
