"""A bare 3DGS .ply in the viewer: its frame (box, orbit centre, first view, crop box) comes from
its opaque Gaussians, not from faint fog far away."""
from __future__ import annotations

import numpy as np
import torch

from fieldkit.splats.frame import BOX_SHARE
from fieldkit.splats.ply import write_splat_ply
from fieldkit.viewer.sources import Source

CENTER = np.array([50.0, -20.0, 5.0])   # a capture's own coordinates: far from the origin


def _ply(tmp_path, fog: int = 3000):
    """2000 opaque Gaussians in a cube of half-size 2 around CENTER, and ``fog`` faint ones
    spread 100 units around it (stray fog, as photo-trained splats have)."""
    g = torch.Generator().manual_seed(0)
    center = torch.as_tensor(CENTER, dtype=torch.float32)
    core = center + (torch.rand(2000, 3, generator=g) * 2 - 1) * 2
    far = center + torch.randn(fog, 3, generator=g) * 100
    n = 2000 + fog
    params = {"means": torch.cat([core, far]),
              "scales": torch.full((n, 3), -3.0),
              "quats": torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
              "opacities": torch.cat([torch.full((2000,), 3.0), torch.full((fog,), -5.0)]),
              "sh0": torch.rand(n, 1, 3, generator=g), "shN": torch.zeros(n, 0, 3)}
    return write_splat_ply(tmp_path / "scene.ply", params)


def test_a_ply_is_framed_by_its_opaque_gaussians(tmp_path):
    source = Source.from_ply(_ply(tmp_path))
    assert source.is_splat and source.normalisation is None       # its own coordinates
    # the box holds BOX_SHARE of the opaque cube along every axis: half-size just under 2
    assert 1.8 < source.bound() <= 2.0 * BOX_SHARE + 0.05
    np.testing.assert_allclose(source.look_at(), CENTER, atol=0.2)
    np.testing.assert_allclose(source.box_center(), CENTER, atol=0.2)
    position, target, _ = source.home_pose()
    np.testing.assert_allclose(target, CENTER, atol=0.2)
    distance = float(np.linalg.norm(position - target))
    assert 2 * source.bound() < distance < 10 * source.bound()    # the cube fills the view


def test_a_ply_renders_its_scene_from_the_first_view(tmp_path):
    from fieldkit.data.cameras import Cameras
    from fieldkit.export.paths import look_at
    from fieldkit.viewer.camera import focal_from_fov

    source = Source.from_ply(_ply(tmp_path, fog=500))
    position, target, fov = source.home_pose()
    f = focal_from_fov(fov, 64)
    camera = Cameras(c2w=torch.as_tensor(look_at(position, target), dtype=torch.float32)[None],
                     K=torch.tensor([[[f, 0.0, 32.0], [0.0, f, 32.0], [0.0, 0.0, 1.0]]]),
                     width=torch.tensor([64]), height=torch.tensor([64]))
    out = source.render(camera, torch.zeros(3))
    covered = float((out["alpha"] > 0.5).float().mean())
    assert 0.05 < covered < 0.9    # the cube is in the picture and does not overflow it


def test_a_3dgs_output_folder_opens_at_its_first_camera(tmp_path):
    """``fieldkit view FOLDER``: the latest .ply, and the first camera of its cameras.json (by
    image name) gives the first view, the orbit centre and the frustums."""
    from fieldkit.export.paths import look_at
    from fieldkit.splats.gs_folder import write_cameras_json
    from fieldkit.viewer.server import open_sources

    folder = tmp_path / "garden"
    (folder / "point_cloud" / "iteration_30000").mkdir(parents=True)
    _ply(tmp_path).rename(folder / "point_cloud" / "iteration_30000" / "point_cloud.ply")
    angles = np.radians([90.0, 0.0, 45.0])           # file order; by name 0.0 comes first
    pos = CENTER + 12 * np.stack([np.cos(angles), np.sin(angles), 0.3 * np.ones(3)], -1)
    c2w = np.stack([look_at(p, CENTER) for p in pos])
    K = np.tile(np.array([[60.0, 0, 40], [0, 60, 30], [0, 0, 1]]), (3, 1, 1))
    write_cameras_json(folder / "cameras.json", c2w, K, np.full(3, 80), np.full(3, 60),
                       ["b.png", "a.png", "c.png"])
    (source,) = open_sources(folder)
    assert source.label == "garden" and source.normalisation is None
    assert source.ply_path.parent.name == "iteration_30000" and len(source.cameras) == 3
    position, target, fov = source.home_pose()
    np.testing.assert_allclose(position, pos[1], atol=1e-4)             # a.png
    np.testing.assert_allclose(target, CENTER, atol=1e-3)               # where they look
    assert abs(fov - 2 * np.arctan(30 / 60)) < 1e-6
    # a bare .ply of the same Gaussians has no cameras and starts outside its box
    bare = tmp_path / "bare"
    bare.mkdir()
    assert Source.from_ply(_ply(bare)).cameras is None
