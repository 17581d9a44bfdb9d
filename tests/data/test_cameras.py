import math

import torch

from fieldkit.data.cameras import Cameras, opengl_to_opencv
from fieldkit.data.normalize import Normalisation, rotation_between


def _look_at(position, target=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """OpenCV c2w looking from ``position`` at ``target`` with world up +z."""
    pos, tgt = torch.tensor(position, dtype=torch.float64), torch.tensor(target, dtype=torch.float64)
    z = (tgt - pos) / (tgt - pos).norm()
    x = torch.linalg.cross(z, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, pos
    return c2w


def _cams(distorted: bool = True) -> Cameras:
    c2w = torch.stack([_look_at((3.0, 1.0, 1.0)), _look_at((-2.0, 2.5, 0.5), (0.1, 0.0, 0.2))])
    K = torch.tensor([[[300.0, 0, 161.3], [0, 310.0, 118.7], [0, 0, 1]],
                      [[250.0, 0, 80.0], [0, 250.0, 60.0], [0, 0, 1]]], dtype=torch.float64)
    d = torch.tensor([[0.05, -0.08, 0.0, 0.0, -0.001, 0.0002], [0.0] * 6], dtype=torch.float64)
    return Cameras(c2w, K, torch.tensor([320, 160]), torch.tensor([240, 120]),
                   d if distorted else None)


def test_ray_through_pixel_projects_back_to_it():
    cams = _cams()
    for cam in range(2):
        xy = cams.pixel_centers(cam).reshape(-1, 2).double()
        idx = torch.full((len(xy),), cam)
        o, d = cams.rays(idx, xy)
        assert torch.allclose(d.norm(dim=-1), torch.ones(len(d), dtype=d.dtype))
        for t in (0.5, 2.0, 7.0):
            px, z = cams.project(idx, o + t * d)
            assert (z > 0).all()
            assert (px - xy).abs().max() < 1e-6


def test_principal_point_ray_is_the_optical_axis():
    cams = _cams(distorted=False)
    o, d = cams.rays(torch.tensor([0]), cams.K[0, :2, 2][None])
    assert torch.allclose(d[0], cams.c2w[0, :3, 2])
    assert torch.allclose(o[0], cams.c2w[0, :3, 3])


def test_image_rays_cover_the_field_of_view():
    cams = _cams(distorted=False)
    o, d = cams.image_rays(1)
    assert d.shape == (120, 160, 3) and o.shape == (120, 160, 3)
    # Pixel-centre rays at the horizontal edges: half a pixel inside the image border.
    left = torch.dot(d[60, 0], cams.c2w[1, :3, 0]) / torch.dot(d[60, 0], cams.c2w[1, :3, 2])
    assert math.isclose(float(left), (0.5 - 80.0) / 250.0, rel_tol=1e-5)


def test_resized_cameras_see_the_same_rays_at_the_same_image_positions():
    cams = _cams()
    small = cams.resized(torch.tensor([80, 40]), torch.tensor([60, 30]))
    xy_small = torch.tensor([[10.5, 20.5], [0.5, 0.5]], dtype=torch.float64)
    for cam, factor in ((0, 4.0), (1, 4.0)):
        idx = torch.tensor([cam, cam])
        _, d_small = small.rays(idx, xy_small)
        _, d_full = cams.rays(idx, xy_small * factor)
        assert torch.allclose(d_small, d_full, atol=1e-10)


def test_similarity_transform_keeps_projections():
    cams = _cams()
    norm = Normalisation(0.37, rotation_between(torch.tensor([0.2, 0.3, 0.9]).numpy(),
                                                torch.tensor([0.0, 0.0, 1.0]).numpy()),
                         torch.tensor([0.3, -0.2, 0.5]).numpy())
    moved = cams.transformed(torch.from_numpy(norm.matrix()), norm.scale)
    rot = moved.c2w[:, :3, :3]
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(3, dtype=rot.dtype).expand(2, 3, 3))
    world = torch.tensor([[0.2, 0.1, 0.3], [-0.4, 0.5, 0.0]], dtype=torch.float64)
    idx = torch.tensor([0, 1])
    px_world, z_world = cams.project(idx, world)
    px_box, z_box = moved.project(idx, norm.to_box(world))
    assert torch.allclose(px_world, px_box, atol=1e-8)
    assert torch.allclose(z_box, z_world * norm.scale)


def test_opengl_to_opencv_flips_y_and_z():
    c2w = torch.eye(4).expand(1, 4, 4)
    out = opengl_to_opencv(c2w)
    assert torch.equal(out[0, :3, :3].diagonal(), torch.tensor([1.0, -1.0, -1.0]))


def test_subset_and_state_dict_round_trip():
    cams = _cams()
    one = cams[1]
    assert len(one) == 1 and one.distortion is None  # camera 1 has no distortion
    back = Cameras.from_state_dict(cams.state_dict())
    assert torch.equal(back.c2w, cams.c2w) and torch.equal(back.distortion, cams.distortion)


def test_cropped_cameras_see_the_same_rays_at_the_shifted_pixels():
    cams = _cams()                      # distorted: the window keeps the distortion's centre
    win = cams.cropped(37, 21, 50, 40)
    assert win.width.tolist() == [50, 50] and win.height.tolist() == [40, 40]
    xy = torch.tensor([[0.5, 0.5], [49.5, 39.5], [12.25, 30.75]], dtype=torch.float64)
    for cam in (0, 1):
        idx = torch.full((3,), cam)
        o_win, d_win = win.rays(idx, xy)
        o_full, d_full = cams.rays(idx, xy + torch.tensor([37.0, 21.0], dtype=torch.float64))
        assert torch.allclose(o_win, o_full) and torch.allclose(d_win, d_full, atol=1e-10)
