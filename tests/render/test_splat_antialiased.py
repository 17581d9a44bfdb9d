"""The rasterizer's antialiased mode (gsplat's ``rasterize_mode="antialiased"``): the opacity
compensation against gsplat's own pure-torch reference, and what it is for: the low-pass
filter no longer adds weight to small Gaussians."""
from __future__ import annotations

import pytest
import torch

from fieldkit.render.splat import project, quat_scale_to_covar, rasterize
from tests.render.test_splat import camera, random_scene


def test_compensation_matches_gsplats_torch_reference():
    torch_impl = pytest.importorskip("gsplat.cuda._torch_impl",
                                     reason="gsplat's pure-torch reference (pip install gsplat)")
    W, H = 64, 48
    view, K = camera(W, H, f=40.0, dtype=torch.float32)
    means, quats, scales, opac, _ = random_scene(300, seed=4, dtype=torch.float32)
    plain = project(means, quats, scales, opac, view, K, W, H)
    aa = project(means, quats, scales, opac, view, K, W, H, antialiased=True)
    covars = quat_scale_to_covar(quats, scales)
    radii, _, _, conics, comp = torch_impl._fully_fused_projection(
        means, covars, view[None], K[None], W, H, eps2d=0.3,
        calc_compensations=True)
    seen = aa.visible & (radii[0] > 0).all(-1)
    assert seen.sum() > 100
    torch.testing.assert_close(aa.opacities[seen] / opac[seen], comp[0][seen], rtol=1e-4,
                               atol=1e-6)
    torch.testing.assert_close(aa.conics[seen], plain.conics[seen])   # only the opacity moves
    assert (aa.opacities <= opac + 1e-7).all() and (aa.opacities < 0.5 * opac).any()


@pytest.mark.parametrize("sigma_px", [0.7, 1.5])
def test_the_filter_keeps_a_small_gaussians_total_weight(sigma_px):
    """One Gaussian's summed alpha: with eps2d = 0.3 px^2 the classic mode inflates it by
    sqrt(det(cov + eps I) / det(cov)) (to within its 1/255 cut-off, 0.5% of it at
    opacity 0.9); the antialiased mode draws the unfiltered weight."""
    W = H = 33
    view, K = camera(W, H, f=100.0, dtype=torch.float64)
    z = 4.0
    means = torch.tensor([[0.0, 0.0, z]], dtype=torch.float64)
    scales = torch.full((1, 3), sigma_px * z / 100.0, dtype=torch.float64)
    quats = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64)
    opac, colors = torch.tensor([0.9], dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64)

    def weight(eps2d, antialiased):
        out, _ = rasterize(means, quats, scales, opac, colors, view, K, W, H, eps2d=eps2d,
                           antialiased=antialiased)
        return float(out["alpha"].sum())

    exact = 0.9 * 2 * torch.pi * sigma_px ** 2         # the unfiltered Gaussian's integral
    inflate = (sigma_px ** 2 + 0.3) / sigma_px ** 2
    assert weight(0.3, True) == pytest.approx(exact, rel=0.03)
    assert weight(0.3, False) == pytest.approx(exact * inflate, rel=0.03)
