"""Tests for the procedural demo scene generator (fieldkit.data.demo)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fieldkit.data import demo

SIZE = 48
COUNTS = {"train": 6, "val": 2, "test": 2}


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "scene"
    ret = demo.generate_demo_scene(out, size=SIZE, n_train=6, n_val=2, n_test=2, seed=3)
    assert Path(ret) == out
    return out


def _frames(scene: Path):
    """Yield (split, meta, frame, rgba [H,W,4] uint8) for every frame of the scene."""
    for split in COUNTS:
        meta = json.loads((scene / f"transforms_{split}.json").read_text())
        for frame in meta["frames"]:
            rgba = np.asarray(Image.open(scene / (frame["file_path"] + ".png")))
            yield split, meta, frame, rgba


def _opengl_rays(c2w: np.ndarray, w: int, h: int, angle_x: float):
    """Independent re-implementation of the NeRF-synthetic ray convention (pixel centres)."""
    f = 0.5 * w / math.tan(0.5 * angle_x)
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    x, y = j + 0.5, i + 0.5
    cam = np.stack([(x - w / 2) / f, -(y - h / 2) / f, -np.ones_like(x, dtype=float)], -1)
    dirs = cam.reshape(-1, 3) @ c2w[:3, :3].T
    return np.tile(c2w[:3, 3], (len(dirs), 1)), dirs


def test_files_and_json_structure(scene: Path):
    assert (scene / "README.md").is_file()
    assert "python -m fieldkit.data.demo" in (scene / "README.md").read_text()
    for split, n in COUNTS.items():
        meta = json.loads((scene / f"transforms_{split}.json").read_text())
        assert meta["camera_angle_x"] == pytest.approx(demo.CAMERA_ANGLE_X)
        assert 0.5 < meta["camera_angle_x"] < 1.0
        assert [f["file_path"] for f in meta["frames"]] == [f"./{split}/r_{i}" for i in range(n)]
        assert sorted(p.name for p in (scene / split).iterdir()) == sorted(
            f"r_{i}.png" for i in range(n)
        )
        for f in meta["frames"]:
            m = np.array(f["transform_matrix"])
            assert m.shape == (4, 4)
            np.testing.assert_allclose(m[3], [0, 0, 0, 1])
            r, t = m[:3, :3], m[:3, 3]
            np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-9)
            assert np.linalg.det(r) == pytest.approx(1.0)
            assert np.linalg.norm(t) == pytest.approx(demo.CAMERA_RADIUS)
            # Camera looks down its -z axis at the origin, and its +x axis is horizontal.
            np.testing.assert_allclose(-r[:, 2], -t / np.linalg.norm(t), atol=1e-9)
            assert abs(r[2, 0]) < 1e-9 and r[2, 1] > 0  # world up +z projects onto camera +y
            elev = math.degrees(math.asin(t[2] / np.linalg.norm(t)))
            assert -11 <= elev <= 71


def test_images_are_rgba_uint8_with_straight_alpha(scene: Path):
    for _, _, _, rgba in _frames(scene):
        assert rgba.shape == (SIZE, SIZE, 4) and rgba.dtype == np.uint8
        assert np.all(rgba[..., :3][rgba[..., 3] == 0] == 0)
        # Straight (not premultiplied) alpha: partially covered edge pixels keep full colour.
        edge = (rgba[..., 3] > 0) & (rgba[..., 3] < 255)
        assert edge.any()


def test_object_visible_and_roughly_centred(scene: Path):
    for _, _, _, rgba in _frames(scene):
        a = rgba[..., 3] / 255.0
        covered = a > 0.5
        assert 0.05 < covered.mean() < 0.8
        assert (a == 0).mean() > 0.2
        ii, jj = np.nonzero(covered)
        assert abs(ii.mean() - SIZE / 2) < 0.2 * SIZE
        assert abs(jj.mean() - SIZE / 2) < 0.2 * SIZE


def test_deterministic(tmp_path: Path, scene: Path):
    again = demo.generate_demo_scene(tmp_path / "again", size=SIZE, n_train=6, n_val=2, n_test=2, seed=3)
    files = sorted(p.relative_to(scene) for p in scene.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (scene / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_seed_changes_train_cameras(tmp_path: Path):
    a = demo.camera_positions(5, 1, 1, seed=0)["train"]
    b = demo.camera_positions(5, 1, 1, seed=1)["train"]
    assert not np.allclose(a, b)


def test_rays_from_transform_hit_where_alpha_covered(scene: Path):
    for _, meta, frame, rgba in _frames(scene):
        c2w = np.array(frame["transform_matrix"])
        o, d = _opengl_rays(c2w, SIZE, SIZE, meta["camera_angle_x"])
        # demo.pixel_rays is the same convention.
        o2, d2 = demo.pixel_rays(c2w, SIZE, SIZE, meta["camera_angle_x"])
        np.testing.assert_allclose(d2.reshape(-1, 3), d, atol=1e-12)
        np.testing.assert_allclose(o2.reshape(-1, 3), o, atol=1e-12)
        hit, t = demo.ray_hits(o, d)
        alpha = rgba[..., 3].reshape(-1) / 255.0
        agree = np.where(alpha > 0.5, hit, ~hit) | (alpha == 0.5)
        assert agree.mean() > 0.98
        # The OpenCV convention (y down, z forward) would disagree badly: the check has teeth.
        cam = d @ c2w[:3, :3]  # back to camera space
        cv_dirs = (cam * [1, -1, -1]) @ c2w[:3, :3].T
        cv_hit, _ = demo.ray_hits(o, cv_dirs)
        assert np.where(alpha > 0.5, cv_hit, ~cv_hit).mean() < 0.95


def test_ray_hits_and_sdf_agree():
    o = np.array([[0.0, -4.0, 0.0], [0.0, -4.0, 3.0], [0.0, 0.0, 0.0]])
    d = np.array([[0.0, 2.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    hit, t = demo.ray_hits(o, d)
    assert hit.tolist() == [True, False, True]
    assert np.isinf(t[1]) and t[2] == 0.0  # a ray starting inside the object hits at t = 0
    p = o[0] + t[0] * d[0]
    assert abs(demo.scene_sdf(p[None])[0]) < 2e-3
    # Non-unit direction: t is measured along the given vector (front of the sphere).
    front = -math.sqrt(demo.SPHERE_R**2 - demo.SPHERE_C[2] ** 2)
    assert p[1] == pytest.approx(front, abs=2e-3)
    assert t[0] == pytest.approx((4.0 + front) / 2.0, abs=2e-3)
    assert demo.scene_sdf(np.zeros((1, 3)))[0] < 0
    corners = np.array([[s1, s2, s3] for s1 in (-1.2, 1.2) for s2 in (-1.2, 1.2) for s3 in (-1.2, 1.2)])
    assert (demo.scene_sdf(corners) > 0).all()


def test_object_not_rotationally_symmetric_about_z():
    masks = []
    for az in (0.0, 2.0, 4.0):
        c2w = demo.look_at([4.0 * math.cos(az), 4.0 * math.sin(az), 1.0])
        o, d = demo.pixel_rays(c2w, 32, 32, demo.CAMERA_ANGLE_X)
        masks.append(demo.ray_hits(o.reshape(-1, 3), d.reshape(-1, 3))[0])
    assert (masks[0] != masks[1]).mean() > 0.03 and (masks[0] != masks[2]).mean() > 0.03


def test_specular_is_view_dependent():
    # A real surface point on the sphere, facing the light.
    o = demo.SPHERE_C + 3.0 * demo.LIGHT_DIR
    hit, t = demo.ray_hits(o[None], -demo.LIGHT_DIR[None])
    assert hit[0]
    p = o[None] + t[:, None] * -demo.LIGHT_DIR[None]
    n = demo.scene_normals(p)
    np.testing.assert_allclose(n[0], demo.LIGHT_DIR, atol=1e-3)
    base = np.array([[0.3, 0.3, 0.3]])
    mirror = 2 * (n[0] @ demo.LIGHT_DIR) * n[0] - demo.LIGHT_DIR  # reflection direction
    side = np.cross(n[0], [0.0, 0.0, 1.0])
    side = 0.6 * n[0] + 0.8 * side / np.linalg.norm(side)
    c_mirror = demo.shade(p, n, mirror[None], base)
    c_side = demo.shade(p, n, side[None], base)
    assert (c_mirror - c_side).min() > 0.2  # highlight only towards the mirror direction
    # Away from the highlight only the (view-independent) ambient + diffuse part remains.
    other = 0.6 * n[0] - 0.8 * side / np.linalg.norm(side) + 0.48 * n[0]
    other /= np.linalg.norm(other)
    c_other = demo.shade(p, n, other[None], base)
    np.testing.assert_allclose(c_side, c_other, atol=0.02)
    np.testing.assert_allclose(c_side, base * (demo.AMBIENT + demo.DIFFUSE), atol=0.02)


def test_cli(tmp_path: Path):
    out = tmp_path / "cli"
    res = subprocess.run(
        [sys.executable, "-m", "fieldkit.data.demo", str(out), "--size", "16",
         "--n-train", "2", "--n-val", "1", "--n-test", "1"],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert (out / "transforms_train.json").is_file()
    assert np.asarray(Image.open(out / "train" / "r_1.png")).shape == (16, 16, 4)
