"""Initial Gaussians of a scene without sparse points: on the rays of the photos' pixels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fieldkit.data.cameras import Cameras
from fieldkit.data.normalize import Normalisation
from fieldkit.data.scene import Scene
from fieldkit.splats.init import NEAR_FRACTION, frustum_points
from fieldkit.splats.model import SplatModel
from fieldkit.fields.registry import build_model

W, H = 40, 30


def _scene(bound: float, cam_z: float) -> Scene:
    """One camera at (0, 0, cam_z) looking down -z (OpenCV axes: +z forward, so flipped), a photo
    whose left half is opaque red and right half transparent."""
    c2w = torch.eye(4)
    c2w[:3, :3] = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
    c2w[2, 3] = cam_z
    K = torch.tensor([[30.0, 0, W / 2], [0, 30.0, H / 2], [0, 0, 1]])
    cams = Cameras(c2w[None], K[None], torch.tensor([W]), torch.tensor([H]))
    img = torch.zeros(H, W, 4, dtype=torch.uint8)
    img[:, : W // 2] = torch.tensor([255, 0, 0, 255], dtype=torch.uint8)
    norm = Normalisation(1.0, np.eye(3), np.zeros(3), bound)
    return Scene(Path("."), "blender", cams, [Path("a.png")], img.reshape(-1, 4),
                 torch.tensor([0, H * W]), {"train": torch.tensor([0])}, norm, ["PINHOLE"])


@pytest.mark.parametrize("bound,cam_z", [(1.0, 4.0), (4.0, 2.0)])
def test_points_lie_on_opaque_pixels_rays_inside_the_box(bound, cam_z):
    scene = _scene(bound, cam_z)
    pts, rgb = frustum_points(scene, 3000, bound, torch.Generator().manual_seed(0))
    assert pts.shape == (3000, 3) and rgb.shape == (3000, 3)
    assert (pts.abs() <= bound + 1e-4).all()
    # every point is seen through the opaque (left) half, so it has its red
    xy, z = scene.cameras.project(torch.zeros(3000, dtype=torch.long), pts)
    assert (z > 0).all() and (xy[:, 0] < W / 2 + 1e-3).all() and (xy[:, 0] >= 0).all()
    assert torch.equal(rgb, torch.tensor([1.0, 0, 0]).expand(3000, 3))
    # no closer than NEAR_FRACTION of the camera's distance, spread over the whole depth
    dist = (pts - torch.tensor([0.0, 0, cam_z])).norm(dim=-1)
    assert dist.min() >= NEAR_FRACTION * cam_z - 1e-4
    assert z.max() - z.min() > 0.7 * 2 * bound


def test_a_splat_model_without_points_starts_in_the_frustum_or_the_roi():
    scene = _scene(4.0, 2.0)
    frustum = build_model("splat", 4.0, config=None)
    assert isinstance(frustum, SplatModel)
    frustum.config.init_points = 500
    frustum.init_from_scene(scene)
    means = frustum.params["means"]
    assert len(means) == 500 and means.abs().max() > 1.5  # beyond the region of interest
    roi = build_model("splat", 4.0, config=None)
    roi.config.init_points, roi.config.init_region = 500, "roi"
    roi.init_from_scene(scene)
    assert roi.params["means"].abs().max() <= 1.0
