"""The CUDA splat path: backend choice (runs anywhere), the gsplat adapter against a fake gsplat
built from the torch twin (runs anywhere), and gsplat against the torch twin on the same CUDA
tensors, forward and backward (skips without CUDA and working gsplat kernels)."""
from __future__ import annotations

import inspect
import math
import sys
import types
import warnings

import pytest
import torch

from fieldkit.errors import FieldkitError, FieldkitWarning
from fieldkit.render import backends
from fieldkit.render.backends import choose_splat_backend, gsplat_status
from fieldkit.render.splat import Projection, bin_tiles, composite, project, rasterize
from fieldkit.render.splat_gsplat import rasterize_gsplat


@pytest.fixture
def fresh_backends(monkeypatch):
    """Forget the cached probe and the once-per-process warning for the test's duration."""
    monkeypatch.setattr(backends, "_warned", set())
    gsplat_status.cache_clear()
    yield
    gsplat_status.cache_clear()


def random_scene(n: int, width: int, height: int, seed: int, device="cpu",
                 dtype=torch.float32):
    """n Gaussians up to 1.2x the half field of view (some outside, exercising the Jacobian
    clamp and culling), 1.5 to 5 units deep, seen by a rotated, translated, off-centre camera.
    Opacities stay below 0.95 so the 0.999 alpha clamp (a kink in the gradient) is not hit."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64)  # noqa: E731
    f = 0.9 * width
    K = torch.tensor([[f, 0, width / 2 + 1.3], [0, f, height / 2 - 0.7], [0, 0, 1]],
                     dtype=torch.float64)
    z = 1.5 + 3.5 * rand(n)
    x = (2 * rand(n) - 1) * 1.2 * 0.5 * width / f * z
    y = (2 * rand(n) - 1) * 1.2 * 0.5 * height / f * z
    cam = torch.stack([x, y, z], -1)
    axis = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    angle = axis.norm()
    k = axis / angle
    Kx = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    R = torch.eye(3, dtype=torch.float64) + math.sin(angle) * Kx + (1 - math.cos(angle)) * Kx @ Kx
    t = torch.tensor([0.1, -0.2, 0.5], dtype=torch.float64)
    viewmat = torch.eye(4, dtype=torch.float64)
    viewmat[:3, :3], viewmat[:3, 3] = R, t
    means = (cam - t) @ R  # world points whose camera coordinates are ``cam``
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    scales = torch.exp(math.log(0.02) + rand(n, 3) * math.log(15.0))  # 0.02 .. 0.3
    opacities = 0.05 + 0.9 * rand(n)
    colors = rand(n, 3)
    to = lambda v: v.to(device=device, dtype=dtype)  # noqa: E731
    return [to(v) for v in (means, quats, scales, opacities, colors)], to(viewmat), to(K)


# ------------------------------------------------------------------ backend choice (any machine)
def test_auto_on_cpu_is_torch_without_probing_or_warning(fresh_backends, monkeypatch):
    monkeypatch.setattr(backends, "gsplat_status", lambda: pytest.fail("probed on the CPU"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_splat_backend("auto", "cpu") == "torch"
        assert choose_splat_backend("auto", torch.device("cpu")) == "torch"


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_torch_requested_is_torch(fresh_backends, monkeypatch, device):
    monkeypatch.setattr(backends, "gsplat_status", lambda: pytest.fail("probed for 'torch'"))
    assert choose_splat_backend("torch", device) == "torch"
    assert choose_splat_backend(" Torch ", device) == "torch"


def test_cuda_requested_but_unavailable_raises_one_line(fresh_backends, monkeypatch):
    monkeypatch.setattr(backends, "gsplat_status", lambda: (False, "CUDA is not available"))
    for requested in ("cuda", "gsplat"):
        with pytest.raises(FieldkitError) as info:
            choose_splat_backend(requested, "cuda")
        msg = str(info.value)
        assert "\n" not in msg and "CUDA is not available" in msg and "'torch'" in msg


def test_cuda_requested_for_cpu_tensors_raises(fresh_backends, monkeypatch):
    monkeypatch.setattr(backends, "gsplat_status", lambda: (True, "ok"))
    with pytest.raises(FieldkitError, match="CUDA device"):
        choose_splat_backend("cuda", "cpu")
    assert choose_splat_backend("cuda", "cuda") == "gsplat"


def test_unknown_backend_raises(fresh_backends):
    with pytest.raises(FieldkitError, match="unknown splat backend"):
        choose_splat_backend("vulkan", "cpu")


def test_auto_on_cuda_uses_gsplat_when_the_probe_passes(fresh_backends, monkeypatch):
    monkeypatch.setattr(backends, "gsplat_status", lambda: (True, "ok"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_splat_backend("auto", "cuda:0") == "gsplat"


def test_fallback_warning_is_emitted_once(fresh_backends, monkeypatch):
    monkeypatch.setattr(backends, "gsplat_status", lambda: (False, "kernels failed: boom"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [choose_splat_backend("auto", "cuda") for _ in range(3)] == ["torch"] * 3
        assert choose_splat_backend("auto") == "torch"  # None: cuda when available
    ours = [w for w in caught if issubclass(w.category, FieldkitWarning)]
    assert len(ours) == 1
    msg = str(ours[0].message)
    assert "boom" in msg and "pure-torch rasterizer" in msg and "\n" not in msg


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_probe_without_cuda_fails_cleanly(fresh_backends):
    ok, reason = gsplat_status()
    assert ok is False and reason and "\n" not in reason
    assert gsplat_status() == (ok, reason)  # cached
    with pytest.raises(FieldkitError):
        choose_splat_backend("cuda", "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_splat_backend("auto") == "torch"


def test_probe_without_gsplat_fails_cleanly(fresh_backends, monkeypatch):
    monkeypatch.setitem(sys.modules, "gsplat", None)  # "import gsplat" raises ImportError
    ok, reason = gsplat_status()
    assert not ok and "gsplat cannot be imported" in reason and "\n" not in reason
    with pytest.raises(FieldkitError, match="needs gsplat"):
        rasterize_gsplat(*random_scene(3, 8, 8, 0)[0], torch.eye(4), torch.eye(3), 8, 8)


# ------------------------------------------- the adapter against a fake gsplat (any machine)
def test_same_signature_as_the_torch_twin():
    assert inspect.signature(rasterize_gsplat) == inspect.signature(rasterize)


def fake_gsplat(radii_per_axis: bool) -> types.ModuleType:
    """A CPU stand-in for ``gsplat.rasterization`` built from the twin, with gsplat's shapes:
    [C, ...] outputs, depth as an extra channel normalised afterwards, uninitialised (NaN)
    means2d/conics/depths for culled Gaussians, int32 radii ([C, N, 2], or [C, N] as before
    gsplat 1.5)."""
    def rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height, *,
                      near_plane, far_plane, eps2d, tile_size, render_mode, backgrounds,
                      packed, rasterize_mode, sh_degree):
        assert (render_mode, packed, sh_degree) == ("RGB+ED", False, None)
        assert rasterize_mode in ("classic", "antialiased")
        assert viewmats.shape == (1, 4, 4) and Ks.shape == (1, 3, 3)
        tensors = (means, quats, scales, opacities, colors, viewmats, Ks)
        assert all(t.dtype == torch.float32 and t.is_contiguous() for t in tensors)
        p = project(means, quats, scales, opacities, viewmats[0], Ks[0], width, height,
                    near_plane, far_plane, eps2d, rasterize_mode == "antialiased")
        culled = ~p.visible
        nan = lambda t: torch.where(culled.view(-1, *[1] * (t.dim() - 1)), math.nan, t)  # noqa
        means2d, conics, depths = nan(p.means2d)[None], nan(p.conics)[None], nan(p.depths)[None]
        used = Projection(means2d[0], conics[0], depths[0], p.radii, p.opacities)
        feats = torch.cat([colors, depths[0, :, None]], 1)
        bg = None if backgrounds is None else torch.cat([backgrounds[0], torch.zeros(1)])
        out = composite(used, bin_tiles(used, width, height, tile_size), feats, width, height,
                        bg)
        render = torch.cat([out["rgb"][..., :-1],
                            out["rgb"][..., -1:] / out["alpha"].clamp(min=1e-10)], -1)
        radii = p.radii.int() if radii_per_axis else p.radii.max(-1).values.int()
        meta = {"means2d": means2d, "conics": conics, "depths": depths, "radii": radii[None],
                "opacities": p.opacities[None]}
        return render[None], out["alpha"][None], meta

    return types.SimpleNamespace(rasterization=rasterization)


@pytest.mark.parametrize("radii_per_axis", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_background,antialiased", [(False, False), (True, False),
                                                         (True, True)])
def test_adapter_matches_twin_through_fake_gsplat(monkeypatch, radii_per_axis, dtype,
                                                   with_background, antialiased):
    monkeypatch.setitem(sys.modules, "gsplat", fake_gsplat(radii_per_axis))
    params, view, K = random_scene(60, 40, 30, seed=3, dtype=dtype)
    bg = torch.tensor([0.2, 0.5, 0.9], dtype=dtype) if with_background else None
    g = torch.Generator().manual_seed(9)
    up = {k: torch.rand(30, 40, c, generator=g, dtype=dtype) for k, c in
          (("rgb", 3), ("alpha", 1), ("depth", 1))}
    with torch.no_grad():
        mask = (rasterize(*params, view, K, 40, 30, background=bg, tile_size=8,
                          antialiased=antialiased)[0]["alpha"] > 0.1).to(dtype)
    results = []
    for fn in (rasterize, rasterize_gsplat):
        leaves = [p.clone().requires_grad_() for p in params]
        out, proj = fn(*leaves, view, K, 40, 30, background=bg, tile_size=8,
                       antialiased=antialiased)
        proj.means2d.retain_grad()  # what the trainer does
        loss = sum((out[k] * up[k] * (mask if k == "depth" else 1)).sum() for k in up)
        loss.backward()
        results.append((out, proj, [p.grad for p in leaves]))
    (out_t, proj_t, grads_t), (out_g, proj_g, grads_g) = results
    assert culled_exists(proj_t)
    for k in ("rgb", "depth", "alpha"):
        assert out_g[k].shape == out_t[k].shape and out_g[k].dtype == dtype
        torch.testing.assert_close(out_g[k], out_t[k], atol=1e-5, rtol=1e-5)
    assert proj_g.radii.dtype == torch.int64 and proj_g.radii.shape == proj_t.radii.shape
    vis = proj_t.visible
    if radii_per_axis:
        assert torch.equal(proj_g.radii, proj_t.radii)
    assert torch.equal(proj_g.visible, vis)
    for name in ("means2d", "conics", "depths"):
        a, b = getattr(proj_g, name), getattr(proj_t, name)
        assert torch.isfinite(a).all() and (a[~vis] == 0).all()
        torch.testing.assert_close(a[vis].to(b.dtype), b[vis].detach(), atol=1e-5, rtol=1e-5)
    assert proj_g.means2d.grad is not None
    torch.testing.assert_close(proj_g.means2d.grad[vis].to(dtype), proj_t.means2d.grad[vis],
                               atol=1e-5, rtol=1e-4)
    for a, b in zip(grads_g, grads_t):
        assert a.dtype == dtype
        if dtype == torch.float32:  # the same arithmetic up to summation order
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        else:  # float64 leaves, but the adapter computes in float32 as gsplat does
            assert rel_err(a, b) < 1e-5


def culled_exists(proj: Projection) -> bool:
    return bool((~proj.visible).any()) and bool(proj.visible.any())


def test_means2d_grad_stays_none_without_retain_grad(monkeypatch):
    monkeypatch.setitem(sys.modules, "gsplat", fake_gsplat(True))
    params, view, K = random_scene(20, 16, 16, seed=1)
    leaves = [p.clone().requires_grad_() for p in params]
    out, proj = rasterize_gsplat(*leaves, view, K, 16, 16)
    out["rgb"].sum().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns when reading .grad of a non-leaf
        assert proj.means2d.grad is None
    assert leaves[0].grad is not None


# ----------------------------------------------------- gsplat against the twin (CUDA only)
@pytest.fixture(scope="module")
def gsplat_cuda():
    ok, reason = gsplat_status()
    if not ok:
        pytest.skip(f"gsplat CUDA kernels unavailable: {reason}")
    return torch.device("cuda")


def mostly_close(a, b, atol, frac=1e-3, outlier_atol=1.5 / 255):
    """|a - b| <= atol everywhere except on a fraction ``frac`` of the values, which may differ
    by up to ``outlier_atol``: a (Gaussian, pixel) pair whose alpha sits on the 1/255 threshold,
    or a pixel on the T = 1e-4 stop, can fall on either side under gsplat's fast-math __expf,
    which moves that pixel by up to about 1/255."""
    err = (a - b).abs()
    bad = err > atol
    assert err.max() <= outlier_atol, f"max error {err.max():.3g}"
    assert bad.float().mean() <= frac, f"{int(bad.sum())} of {bad.numel()} values beyond {atol}"


def rel_err(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


SIZES = [(64, 48), (128, 96), (72, 45)]  # the last: partial tiles on two sides


@pytest.mark.parametrize("width,height", SIZES)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("with_background,antialiased", [(False, False), (True, False),
                                                         (True, True)])
def test_gsplat_forward_matches_twin(gsplat_cuda, width, height, seed, with_background,
                                     antialiased):
    params, view, K = random_scene(200, width, height, seed, device=gsplat_cuda)
    bg = torch.tensor([0.2, 0.5, 0.9], device=gsplat_cuda) if with_background else None
    with torch.no_grad():
        out_t, proj_t = rasterize(*params, view, K, width, height, background=bg, tile_size=16,
                                  antialiased=antialiased)
        out_g, proj_g = rasterize_gsplat(*params, view, K, width, height, background=bg,
                                         tile_size=16, antialiased=antialiased)
    assert culled_exists(proj_t)
    # Projection: the same float32 formulas; radii are ceil() of fast-math sqrt/log, so a box
    # may be one pixel larger or smaller, and that can flip visibility at the image edge.
    both = proj_g.visible & proj_t.visible
    assert (proj_g.visible ^ proj_t.visible).sum() <= 2
    assert (proj_g.radii[both] - proj_t.radii[both]).abs().max() <= 1
    assert (proj_g.radii[both] != proj_t.radii[both]).any(-1).float().mean() <= 0.02
    torch.testing.assert_close(proj_g.means2d[both], proj_t.means2d[both], atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(proj_g.depths[both], proj_t.depths[both], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(proj_g.conics[both], proj_t.conics[both], atol=1e-5, rtol=1e-3)
    # Images: float32 kernels with a different summation order agree to ~1e-5; 1e-4 leaves room,
    # and ``mostly_close`` lets a few threshold pixels differ by about 1/255.
    for k in ("rgb", "alpha"):
        assert out_g[k].shape == out_t[k].shape
        mostly_close(out_g[k], out_t[k], atol=1e-4)
    # Expected depth divides by alpha: compare where alpha is substantial, relative to depth.
    solid = (out_t["alpha"] > 0.1) & (out_g["alpha"] > 0.1)
    depth_rel = (out_g["depth"] - out_t["depth"]).abs() / out_t["depth"].clamp_min(1e-6)
    mostly_close(depth_rel[solid], torch.zeros_like(depth_rel[solid]), atol=1e-4,
                 outlier_atol=2e-2)


# Gradients: float32 accumulation in a different order (gsplat walks pixels back to front and
# divides the transmittance back out) against autograd of the twin. gsplat's own tests compare
# its kernels with its torch reference at elementwise rtol/atol 1e-3 (colours, conics) up to
# 5e-3 (means2d) and 8e-3 (opacities); a relative L2 error over all Gaussians is steadier than
# elementwise checks (a single threshold flip barely moves it), so we ask for 1e-3 on colours
# and 5e-3 on the rest.
GRAD_REL = {"means": 5e-3, "quats": 5e-3, "scales": 5e-3, "opacities": 5e-3, "colors": 1e-3,
            "means2d": 5e-3}


@pytest.mark.parametrize("width,height", SIZES)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("antialiased", [False, True])
def test_gsplat_backward_matches_twin(gsplat_cuda, width, height, seed, antialiased):
    params, view, K = random_scene(200, width, height, seed, device=gsplat_cuda)
    bg = torch.tensor([0.2, 0.5, 0.9], device=gsplat_cuda)
    g = torch.Generator(device=gsplat_cuda).manual_seed(seed)
    up = {k: torch.randn(height, width, c, device=gsplat_cuda, generator=g) for k, c in
          (("rgb", 3), ("alpha", 1), ("depth", 1))}
    with torch.no_grad():  # one mask for both: depth gradients only where alpha is substantial
        mask = (rasterize(*params, view, K, width, height, background=bg,
                          antialiased=antialiased)[0]["alpha"] > 0.1)
    grads = []
    for fn in (rasterize, rasterize_gsplat):
        leaves = [p.clone().requires_grad_() for p in params]
        out, proj = fn(*leaves, view, K, width, height, background=bg, tile_size=16,
                       antialiased=antialiased)
        proj.means2d.retain_grad()  # as the trainer does; gsplat's must be filled too
        loss = ((out["rgb"] * up["rgb"]).sum() + (out["alpha"] * up["alpha"]).sum()
                + (out["depth"] * up["depth"] * mask).sum())
        loss.backward()
        assert proj.means2d.grad is not None and proj.means2d.grad.shape == (200, 2)
        grads.append(dict(zip(("means", "quats", "scales", "opacities", "colors"),
                              (p.grad for p in leaves)), means2d=proj.means2d.grad))
    twin, ours = grads
    for name, tol in GRAD_REL.items():
        assert torch.isfinite(ours[name]).all(), name
        assert rel_err(ours[name], twin[name]) < tol, (name, rel_err(ours[name], twin[name]))


def test_gsplat_is_chosen_on_cuda(gsplat_cuda, fresh_backends):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_splat_backend("auto", "cuda") == "gsplat"
        assert choose_splat_backend("cuda", "cuda") == "gsplat"
