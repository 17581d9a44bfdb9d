"""The compiled CPU projection (``fieldkit/render/splat_cpu_project.py``) against its twin,
``splat.project`` (autograd of the torch code, in float64): every output, the culling boxes,
and the gradients of means, quats, scales and opacities, plain and antialiased, through a
rotated camera, with Gaussians behind it, beside it (the Jacobian's clamp) and squashed flat
(the low-pass); and the renders that use it."""
from __future__ import annotations

import math

import pytest
import torch

from fieldkit.render import splat_cpu
from fieldkit.render.splat import project, rasterize
from fieldkit.render.splat_cpu_project import project_cpu
from tests.render.test_splat import random_scene


@pytest.fixture(scope="module", autouse=True)
def _built():
    try:
        splat_cpu._extension()
    except Exception as err:   # no g++ / ninja here: the torch path is all there is
        pytest.skip(f"the CPU splat extension does not build here ({type(err).__name__})")


def _view(seed: int) -> torch.Tensor:
    """A world-to-camera matrix [4, 4] (float64) that turns and moves the camera a little."""
    g = torch.Generator().manual_seed(100 + seed)
    axis = torch.nn.functional.normalize(torch.randn(3, generator=g, dtype=torch.float64), dim=0)
    angle = 0.3
    Kx = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]],
                      dtype=torch.float64)
    R = torch.eye(3, dtype=torch.float64) + math.sin(angle) * Kx + (1 - math.cos(angle)) * Kx @ Kx
    view = torch.eye(4, dtype=torch.float64)
    view[:3, :3] = R
    view[:3, 3] = torch.tensor([0.1, -0.05, 0.2])
    return view


def _scene(n: int, seed: int) -> list[torch.Tensor]:
    """float32 means, quats (unnormalised), scales, opacities; the last Gaussians placed
    behind the camera, far beside the view, and squashed flat."""
    means, quats, scales, opac, _ = random_scene(n, seed)
    k = n // 10
    means[:k, 2] = -means[:k, 2]                      # behind the camera
    means[k:2 * k, 0] *= 6                             # beside the view: the clamp acts
    scales[2 * k:3 * k, 0] = 1e-4                      # flat: the low-pass keeps them
    return [t.float() for t in (means, quats, scales, opac)]


FIELDS = ("means2d", "conics", "opacities", "depths")


@pytest.mark.parametrize("antialiased", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_outputs_boxes_and_gradients_match_the_torch_code(seed, antialiased):
    W, H, f = 64, 48, 50.0
    K = torch.tensor([[f, 0, W / 2 + 1.5], [0, f * 1.1, H / 2 - 2.0], [0, 0, 1]],
                     dtype=torch.float64)
    view = _view(seed)
    ours_in = [t.clone().requires_grad_(True) for t in _scene(400, seed)]
    ref_in = [t.detach().double().requires_grad_(True) for t in ours_in]
    ours = project_cpu(*ours_in, view.float(), K.float(), W, H, antialiased=antialiased)
    ref = project(*ref_in, view, K, W, H, antialiased=antialiased)
    assert 50 < int(ref.visible.sum()) < 400 - 40       # some culled, many kept
    for name in FIELDS:
        torch.testing.assert_close(getattr(ours, name).double(), getattr(ref, name),
                                   rtol=2e-5, atol=1e-5)
    # boxes: equal but where float32 rounding sits on a pixel boundary (rare)
    assert float((ours.radii != ref.radii).any(-1).float().mean()) <= 0.01
    assert torch.equal(ours.visible, ref.visible)
    g = torch.Generator().manual_seed(seed)
    ups = [torch.randn(getattr(ref, n).shape, generator=g, dtype=torch.float64) for n in FIELDS]
    loss_ours = sum((getattr(ours, n).double() * u).sum() for n, u in zip(FIELDS, ups))
    loss_ref = sum((getattr(ref, n) * u).sum() for n, u in zip(FIELDS, ups))
    got = torch.autograd.grad(loss_ours, ours_in)
    want = torch.autograd.grad(loss_ref, ref_in)
    for name, a, b in zip(("means", "quats", "scales", "opacities"), got, want):
        scale = float(b.abs().max())
        assert scale > 0, name
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5 * scale,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_a_render_uses_it_and_a_camera_with_a_gradient_does_not(monkeypatch):
    """Training renders (compiled blending) project with it; an optimised camera (pose-opt)
    gets its gradient from the torch code; images and gradients agree either way."""
    import fieldkit.render.splat_cpu_project as module

    calls = []
    real = module._Project.apply
    monkeypatch.setattr(module._Project, "apply",
                        staticmethod(lambda *a: calls.append(1) or real(*a)))
    W, H = 40, 30
    K = torch.tensor([[35.0, 0, 20], [0, 35.0, 15], [0, 0, 1]])
    means, quats, scales, opac = (t.requires_grad_(True) for t in _scene(60, 3))
    colors = torch.rand(60, 3, generator=torch.Generator().manual_seed(3), requires_grad=True)
    outs = []
    for cam_grad in (False, True):
        view = _view(3).float().requires_grad_(cam_grad)
        out, _ = rasterize(means, quats, scales, opac, colors, view, K, W, H,
                           background=torch.ones(3), cpu_blend=True)
        grads = torch.autograd.grad(out["rgb"].sum(), (means, scales, colors))
        outs.append((out["rgb"].detach(), grads))
        assert len(calls) == 1                      # only the fixed camera's render
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=2e-5, rtol=1e-5)
    for a, b in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(a, b, atol=1e-4 * float(b.abs().max()), rtol=1e-3)
