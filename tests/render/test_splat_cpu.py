"""The compiled CPU blending (``fieldkit/render/splat_cpu.py``) against its twin, the torch
path of ``splat.rasterize``: images and gradients (also through the alpha clamp and 3DGS's
stop), any tile size, image size and colour width; run-to-run identical gradients; the
choice between the two paths; and the fallback."""
from __future__ import annotations

import pytest
import torch

from fieldkit.render import splat_cpu
from fieldkit.render.splat import rasterize
from tests.render.test_splat import camera, random_scene


@pytest.fixture(scope="module", autouse=True)
def _built():
    try:
        splat_cpu._extension()
    except Exception as err:   # no g++ / ninja here: the torch path is all there is
        pytest.skip(f"the CPU splat blending does not build here ({type(err).__name__})")


def _scene(n: int, seed: int, channels: int = 3, opaque: bool = False):
    means, quats, scales, opac, colors = (t.float() for t in random_scene(n, seed))
    if channels != 3:
        colors = torch.rand(n, channels, generator=torch.Generator().manual_seed(seed))
    if opaque:   # stacked near the axis, the nearest clamped at ALPHA_MAX: the stop is reached
        means[:, :2] *= 0.15
        scales = scales + 0.05
        opac = torch.linspace(0.99999, 0.9, n)[torch.argsort(torch.argsort(means[:, 2]))]
        near = int(torch.argmin(means[:, 2]))
        means[near, :2] = 0.5 / 20.0 * means[near, 2]   # onto a pixel centre (f = 20): clamped
    return [t.requires_grad_(True) for t in (means, quats, scales, opac, colors)]


def _both(params, W, H, tile=16, f=30.0):
    view, K = camera(W, H, f=f, dtype=torch.float32)
    bg = torch.linspace(0.2, 0.9, params[4].shape[1])
    outs = {}
    for name, cpu in (("torch", False), ("cpp", True)):
        out, proj = rasterize(*params, view, K, W, H, background=bg, tile_size=tile,
                              cpu_blend=cpu)
        proj.means2d.retain_grad()
        g = torch.Generator().manual_seed(5)
        up = {k: torch.randn(v.shape, generator=g) for k, v in out.items()}
        grads = torch.autograd.grad(sum((out[k] * up[k]).sum() for k in up), params)
        outs[name] = (out, grads)
    return outs


@pytest.mark.parametrize("seed,W,H,tile,channels,opaque", [
    (0, 37, 29, 16, 3, False), (1, 40, 23, 8, 3, False), (2, 33, 17, 4, 5, False),
    (3, 24, 20, 16, 3, True), (4, 24, 20, 8, 1, True)])
def test_images_and_gradients_match_the_torch_path(seed, W, H, tile, channels, opaque):
    params = _scene(60 if not opaque else 30, seed, channels, opaque)
    outs = _both(params, W, H, tile, f=20.0 if opaque else 30.0)
    (ref, ref_grads), (ours, our_grads) = outs["torch"], outs["cpp"]
    if opaque:
        assert ref["alpha"].max() > 1 - 1e-3    # layers enough to reach the stop
    for key in ("rgb", "alpha", "depth"):
        torch.testing.assert_close(ours[key], ref[key], atol=2e-5, rtol=1e-5)
    for name, a, b in zip(("means", "quats", "scales", "opacities", "colors"), our_grads,
                          ref_grads):
        assert b.abs().sum() > 0, name
        torch.testing.assert_close(a, b, atol=1e-4 * float(b.abs().max()), rtol=1e-3,
                                   msg=name)


@pytest.mark.skipif((__import__("os").cpu_count() or 1) < 2, reason="one CPU core here")
def test_the_tile_loops_run_on_all_of_atens_threads():
    """Built with OpenMP: ATen's parallel_for, inlined into the extension, runs on one thread
    without it, and the blending took as long on 2 threads as on 1."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert splat_cpu._extension().threads_used() == 2
    finally:
        torch.set_num_threads(before)


def test_gradients_are_the_same_from_run_to_run_and_without_grad_the_image_too():
    params = _scene(200, 9)
    view, K = camera(70, 50, f=40.0, dtype=torch.float32)
    runs = []
    for _ in range(3):
        out, _ = rasterize(*params, view, K, 70, 50, cpu_blend=True)
        runs.append(torch.autograd.grad(out["rgb"].square().sum(), params))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)
    with torch.no_grad():
        plain, _ = rasterize(*params, view, K, 70, 50, cpu_blend=True)
        twin, _ = rasterize(*params, view, K, 70, 50)       # splat_render's batches
    torch.testing.assert_close(plain["rgb"], out["rgb"].detach(), atol=0, rtol=0)
    torch.testing.assert_close(plain["rgb"], twin["rgb"], atol=2e-5, rtol=1e-5)


def test_nothing_in_sight_renders_the_background_and_backpropagates_zeros():
    params = _scene(10, 2)
    with torch.no_grad():
        params[0][:, 2] = -5.0                   # all behind the camera
    view, K = camera(20, 16, f=20.0, dtype=torch.float32)
    out, proj = rasterize(*params, view, K, 20, 16, background=torch.ones(3), cpu_blend=True)
    assert not proj.visible.any()
    assert torch.equal(out["rgb"], torch.ones(16, 20, 3))
    grads = torch.autograd.grad(out["rgb"].sum(), params[4], allow_unused=True)
    assert grads[0] is None or not grads[0].any()


def test_the_model_blends_with_the_compiled_loops_unless_asked_not_to(monkeypatch):
    from fieldkit.data.cameras import Cameras
    from fieldkit.splats.model import SplatConfig, SplatModel

    monkeypatch.delenv("FIELDKIT_CPU_BLEND", raising=False)
    splat_cpu.cpu_blend_status.cache_clear()
    calls = []
    real = splat_cpu.rasterize_cpu
    monkeypatch.setattr(splat_cpu, "rasterize_cpu",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    try:
        model = SplatModel(SplatConfig(init_points=200, init_opacity=0.5))
        model.initialize(None, None, 1.0, torch.Generator().manual_seed(0))
        K = torch.tensor([[[20.0, 0, 12], [0, 20.0, 10], [0, 0, 1]]])
        c2w = torch.eye(4)[None].clone()
        c2w[0, 2, 3] = -2.5
        cam = Cameras(c2w, K, torch.tensor([24]), torch.tensor([20]))
        auto = model.rasterize(cam, torch.zeros(3))[0]["rgb"]
        assert calls == [1]
        model.config.render.backend = "torch"
        twin = model.rasterize(cam, torch.zeros(3))[0]["rgb"]
        assert calls == [1]
        torch.testing.assert_close(auto, twin, atol=2e-5, rtol=1e-5)
        monkeypatch.setenv("FIELDKIT_CPU_BLEND", "off")
        splat_cpu.cpu_blend_status.cache_clear()
        ok, reason = splat_cpu.cpu_blend_status()
        assert not ok and "FIELDKIT_CPU_BLEND" in reason
        model.config.render.backend = "auto"
        model.rasterize(cam, torch.zeros(3))
        assert calls == [1]
        assert not splat_cpu.use_cpu_blend("auto", torch.zeros(1, dtype=torch.float64))
    finally:
        splat_cpu.cpu_blend_status.cache_clear()


@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
def test_a_first_ask_without_gradients_still_finds_the_compiled_loops(monkeypatch, context):
    """A process whose first splat render is a teacher's, the viewer's or an export's (under
    no_grad) asks for the status there; the smoke test's gradient check must not fail and
    leave the whole process on the torch path (cached)."""
    monkeypatch.delenv("FIELDKIT_CPU_BLEND", raising=False)
    splat_cpu.cpu_blend_status.cache_clear()
    try:
        with getattr(torch, context)():
            ok, reason = splat_cpu.cpu_blend_status()
            assert ok, reason
            assert splat_cpu.use_cpu_blend("auto", torch.zeros(1))
    finally:
        splat_cpu.cpu_blend_status.cache_clear()
