"""Small scenes in every format, made from the built-in demo scene, for tests that must not
depend on ../shared: a Blender copy, an instant-ngp transforms.json and a COLMAP model."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from fieldkit.data.formats import colmap_io as cio
from tests.conftest import DEMO_SCENE

N_IMAGES = 12


def _frames() -> tuple[float, list[dict]]:
    meta = json.loads((DEMO_SCENE / "transforms_train.json").read_text())
    return meta["camera_angle_x"], meta["frames"][:N_IMAGES]


def blender_copy(dest: Path) -> Path:
    shutil.copytree(DEMO_SCENE, dest, ignore=shutil.ignore_patterns(".fieldkit"))
    return dest


def _rgb_images(frames: list[dict], dest: Path) -> list[str]:
    (dest / "images").mkdir(parents=True)
    names = []
    for i, frame in enumerate(frames):
        rgba = np.asarray(Image.open(DEMO_SCENE / (frame["file_path"] + ".png")))
        alpha = rgba[..., 3:] / 255.0
        rgb = (rgba[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
        names.append(f"{i:04d}.png")
        Image.fromarray(rgb).save(dest / "images" / names[-1])
    return names


def ngp_scene(dest: Path, **overrides) -> Path:
    """instant-ngp transforms.json with explicit intrinsics and a little distortion."""
    angle, frames = _frames()
    names = _rgb_images(frames, dest)
    w = 96
    meta = {"fl_x": 0.5 * w / math.tan(0.5 * angle), "fl_y": 0.5 * w / math.tan(0.5 * angle),
            "cx": w / 2, "cy": w / 2, "w": w, "h": w, "k1": 0.01, "k2": 0.0, "p1": 0.0,
            "p2": 0.0, "aabb_scale": 2,
            "frames": [{"file_path": f"images/{n}", "transform_matrix": f["transform_matrix"]}
                       for n, f in zip(names, frames)]}
    meta.update(overrides)
    (dest / "transforms.json").write_text(json.dumps(meta, indent=1))
    return dest


def _quaternion(R: np.ndarray) -> np.ndarray:
    """(w, x, y, z) of a rotation matrix."""
    w = math.sqrt(max(0.0, 1 + R[0, 0] + R[1, 1] + R[2, 2])) / 2
    x = math.copysign(math.sqrt(max(0.0, 1 + R[0, 0] - R[1, 1] - R[2, 2])) / 2, R[2, 1] - R[1, 2])
    y = math.copysign(math.sqrt(max(0.0, 1 - R[0, 0] + R[1, 1] - R[2, 2])) / 2, R[0, 2] - R[2, 0])
    z = math.copysign(math.sqrt(max(0.0, 1 - R[0, 0] - R[1, 1] + R[2, 2])) / 2, R[1, 0] - R[0, 1])
    return np.array([w, x, y, z])


def colmap_scene(dest: Path, model: str = "PINHOLE", text: bool = False,
                 points: np.ndarray | None = None) -> Path:
    """A COLMAP model (sparse/0) of the demo cameras, with sparse points ``points`` [P, 3]
    (default: 50 random ones in [-1, 1]^3)."""
    angle, frames = _frames()
    names = _rgb_images(frames, dest)
    f = 0.5 * 96 / math.tan(0.5 * angle)
    params = {"PINHOLE": [f, f, 48, 48], "SIMPLE_RADIAL": [f, 48, 48, 0.0],
              "FULL_OPENCV": [f, f, 48, 48] + [0.0] * 8}[model]
    cams = {1: cio.ColmapCamera(1, model, 96, 96, np.asarray(params, dtype=np.float64))}
    images = {}
    for i, (name, frame) in enumerate(zip(names, frames)):
        c2w = np.asarray(frame["transform_matrix"], dtype=np.float64)
        c2w[:3, 1:3] *= -1  # OpenGL -> OpenCV
        w2c = np.linalg.inv(c2w)
        images[i + 1] = cio.ColmapImage(i + 1, _quaternion(w2c[:3, :3]), w2c[:3, 3], 1, name,
                                        np.zeros((0, 2)), np.zeros(0, dtype=np.int64))
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-1, 1, (50, 3)) if points is None else np.asarray(points, np.float64)
    n = len(xyz)
    points = cio.ColmapPoints(np.arange(1, n + 1, dtype=np.int64), xyz,
                              rng.integers(0, 255, (n, 3), dtype=np.uint8), np.zeros(n))
    sparse = dest / "sparse" / "0"
    sparse.mkdir(parents=True)
    ext = "txt" if text else "bin"
    getattr(cio, f"write_cameras_{ext}")(cams, sparse / f"cameras.{ext}")
    getattr(cio, f"write_images_{ext}")(images, sparse / f"images.{ext}")
    getattr(cio, f"write_points3D_{ext}")(points, sparse / f"points3D.{ext}")
    return dest
