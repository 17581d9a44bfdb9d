"""Loaders on the real scenes in ../shared/scenes (skipped when absent) and the demo scene."""
import json
import math
import warnings

import numpy as np
import torch

from fieldkit.data import demo
from fieldkit.data.formats.colmap_io import read_model
from fieldkit.data.scene import composite, detect_format, load_scene
from fieldkit.errors import FieldkitWarning
from tests.conftest import DEMO_SCENE, shared_scene


def test_lego_blender_counts_sizes_intrinsics():
    scene = load_scene(shared_scene("lego-400"), downscale=4)
    assert scene.format == "blender"
    assert {k: len(v) for k, v in scene.splits.items()} == {"train": 100, "val": 100, "test": 200}
    assert scene.has_alpha and scene.pixels.dtype == torch.uint8
    assert set(scene.cameras.width.tolist()) == {100} and set(scene.cameras.height.tolist()) == {100}
    angle = json.loads((shared_scene("lego-400") / "transforms_train.json").read_text())[
        "camera_angle_x"]
    focal_full = 0.5 * 400 / math.tan(0.5 * angle)
    assert torch.allclose(scene.cameras.K[:, 0, 0], torch.tensor(focal_full / 4), rtol=1e-6)
    assert torch.allclose(scene.cameras.K[:, :2, 2], torch.tensor(50.0))
    # Lego cameras sit at radius ~4.03 world units; the box is [-1.5, 1.5]^3 -> radius ~2.69.
    radius = scene.cameras.positions.norm(dim=-1)
    assert torch.allclose(radius, torch.tensor(4.031 / 1.5), atol=0.01)
    assert scene.image(5).shape == (100, 100, 4)


def test_fox_ngp_counts_sizes_intrinsics_distortion():
    root = shared_scene("fox")
    meta = json.loads((root / "transforms.json").read_text())
    present = sum((root / f["file_path"]).exists() for f in meta["frames"])
    scene = load_scene(root, downscale=8)
    assert scene.format == "ngp" and len(scene) == present
    assert sum(len(v) for v in scene.splits.values()) == present
    assert len(scene.splits["test"]) == math.ceil(present / 8)
    assert set(scene.cameras.width.tolist()) == {135} and set(scene.cameras.height.tolist()) == {240}
    K = scene.cameras.K[0]
    assert math.isclose(float(K[0, 0]), meta["fl_x"] / 8, rel_tol=1e-5)
    assert math.isclose(float(K[1, 1]), meta["fl_y"] / 8, rel_tol=1e-5)
    assert math.isclose(float(K[0, 2]), meta["cx"] / 8, rel_tol=1e-5)
    expected = torch.tensor([meta["k1"], meta["k2"], 0, 0, meta["p1"], meta["p2"]])
    assert torch.allclose(scene.cameras.distortion[0], expected)
    assert scene.normalisation.bound == meta["aabb_scale"]


def test_beer_colmap_counts_sizes_points():
    root = shared_scene("beer-colmap")
    scene = load_scene(root, downscale=4)
    assert scene.format == "colmap" and len(scene) == 71
    assert set(scene.camera_models) == {"SIMPLE_RADIAL"}
    assert scene.points.shape == (4414, 3) and scene.point_rgb.dtype == torch.uint8
    assert len(scene.splits["test"]) == 9 and len(scene.splits["train"]) == 62
    assert set(scene.cameras.width.tolist()) == {180} and set(scene.cameras.height.tolist()) == {320}
    # The normalised box holds the bulk of the sparse points of the object of interest.
    inside = (scene.points.abs() <= 1).all(dim=1).float().mean()
    assert inside > 0.3


def _colmap_project(image, camera, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Independent SIMPLE_RADIAL projection as COLMAP defines it. xyz [P, 3] -> px [P, 2], z."""
    w, x, y, z = image.qvec / np.linalg.norm(image.qvec)
    R = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                  [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                  [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    cam = xyz @ R.T + image.tvec
    u, v = cam[:, 0] / cam[:, 2], cam[:, 1] / cam[:, 2]
    f, cx, cy, k = camera.params
    radial = 1 + k * (u * u + v * v)
    return np.stack([f * u * radial + cx, f * v * radial + cy], 1), cam[:, 2]


def test_beer_rays_pass_through_projected_colmap_points():
    root = shared_scene("beer-colmap")
    cameras, images, points = read_model(root / "sparse" / "0")
    scene = load_scene(root)
    by_name = sorted(images.values(), key=lambda im: im.name)
    checked = 0
    for i in range(0, len(by_name), 7):
        image = by_name[i]
        ids = image.point3D_ids[image.point3D_ids >= 0]
        xyz = points.xyz[np.isin(points.ids, ids)]
        px, depth = _colmap_project(image, cameras[image.camera_id], xyz)
        keep = (depth > 0) & (px[:, 0] > 0) & (px[:, 0] < 720) & (px[:, 1] > 0) & (px[:, 1] < 1280)
        idx = torch.full((int(keep.sum()),), i)
        o, d = scene.cameras.rays(idx, torch.from_numpy(px[keep]).float())
        target = scene.normalisation.to_box(torch.from_numpy(xyz[keep])).float()
        along = ((target - o) * d).sum(-1)
        miss = (target - (o + along[:, None] * d)).norm(dim=-1)
        footprint = along / scene.cameras.K[i, 0, 0]  # one pixel's width at that depth
        assert (along > 0).all()
        assert (miss < footprint).all(), float((miss / footprint).max())
        assert (miss / footprint).median() < 0.05
        checked += len(miss)
    assert checked > 1000


def test_fox_pixel_ray_point_projects_back_within_a_hundredth_of_a_pixel():
    root = shared_scene("fox")
    meta = json.loads((root / "transforms.json").read_text())
    scene = load_scene(root)
    frames = {str((root / f["file_path"]).resolve()): f for f in meta["frames"]}
    xs, ys = np.meshgrid(np.linspace(0.5, 1079.5, 23), np.linspace(0.5, 1919.5, 31))
    pixels = torch.from_numpy(np.stack([xs.ravel(), ys.ravel()], 1)).float()
    k1, k2, p1, p2 = meta["k1"], meta["k2"], meta["p1"], meta["p2"]
    for i in (0, len(scene) // 2, len(scene) - 1):
        o, d = scene.cameras.rays(torch.full((len(pixels),), i), pixels)
        for t in (1.0, 2.5):
            world = scene.normalisation.to_world((o + t * d).double()).numpy()
            # Independent projection with the file's OpenGL pose and OpenCV distortion model.
            c2w = np.asarray(frames[str(scene.image_paths[i].resolve())]["transform_matrix"])
            cam = (world - c2w[:3, 3]) @ c2w[:3, :3]  # R^T (p - t), OpenGL axes
            x, y = cam[:, 0] / -cam[:, 2], -cam[:, 1] / -cam[:, 2]
            r2 = x * x + y * y
            radial = 1 + k1 * r2 + k2 * r2 * r2
            xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
            yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
            u, v = meta["fl_x"] * xd + meta["cx"], meta["fl_y"] * yd + meta["cy"]
            err = np.abs(np.stack([u, v], 1) - pixels.numpy().astype(np.float64))
            assert err.max() < 0.01, err.max()
    # Distortion is real here: ignoring it moves corner pixels by many pixels.
    assert abs(k1) * (1080 / 2 / meta["fl_x"]) ** 2 * meta["fl_x"] > 1.0


def test_demo_blender_axes_rays_hit_the_object_where_alpha_is_set():
    scene = load_scene(DEMO_SCENE)
    assert detect_format(DEMO_SCENE) == "blender"
    agree = []
    for i in (0, 37, 101, 120):
        o, d = scene.cameras.image_rays(i)
        o_w = scene.normalisation.to_world(o.reshape(-1, 3).double())
        d_w = scene.normalisation.to_world((o + d).reshape(-1, 3).double()) - o_w
        hit, _ = demo.ray_hits(o_w.numpy(), d_w.numpy())
        covered = scene.image(i)[..., 3].reshape(-1).numpy() > 127
        agree.append((hit == covered).mean())
        assert covered.any() and not covered.all()
    assert min(agree) > 0.98, agree


def test_composite_over_background_and_random_background():
    rgba = torch.tensor([[255, 0, 0, 255], [0, 255, 0, 0], [0, 0, 255, 128]], dtype=torch.uint8)
    out = composite(rgba, torch.tensor([1.0, 1.0, 1.0]))
    a = 128 / 255
    expected = torch.tensor([[1.0, 0, 0], [1.0, 1.0, 1.0], [1 - a, 1 - a, 1.0]])
    assert torch.allclose(out, expected, atol=1e-6)
    bg = torch.rand(3, 3)
    assert torch.allclose(composite(rgba, bg)[1], bg[1])
    assert torch.equal(composite(rgba[:, :3], bg), rgba[:, :3].float() / 255)


def test_fox_with_missing_images_skips_them_with_one_warning(tmp_path):
    root = shared_scene("fox")
    (tmp_path / "images").mkdir()
    (tmp_path / "transforms.json").write_text((root / "transforms.json").read_text())
    images = sorted((root / "images").iterdir())
    for img in images[:50]:
        (tmp_path / "images" / img.name).symlink_to(img)
    n_frames = len(json.loads((root / "transforms.json").read_text())["frames"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scene = load_scene(tmp_path, downscale=16)
    ours = [w for w in caught if issubclass(w.category, FieldkitWarning)]
    assert len(ours) == 1
    assert f"skipping {n_frames - 50} of {n_frames} frames" in str(ours[0].message)
    assert len(scene) == 50
