"""Blender / NeRF-synthetic scenes: transforms_{train,val,test}.json with RGBA PNG images.

Poses are camera-to-world in Blender/OpenGL camera axes; ``camera_angle_x`` (top level or per
frame) gives the horizontal field of view, and the principal point is the image centre. The
object lives in [-1.5, 1.5]^3 by the dataset's convention, which becomes the renderer's box.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fieldkit.data.formats.common import (RawScene, intrinsics, number, pose_matrix,
                                          read_json)
from fieldkit.data.images import image_size
from fieldkit.data.normalize import fixed_normalisation
from fieldkit.errors import SceneError

SPLITS = ("train", "val", "test")
OBJECT_HALF_EXTENT = 1.5
"""NeRF-synthetic objects fit in [-1.5, 1.5]^3 world units."""


def detect(root: Path) -> bool:
    return (root / "transforms_train.json").is_file()


def resolve_image(root: Path, file_path: str) -> Path:
    """NeRF-synthetic lists paths without an extension ("./train/r_0"); try .png then others."""
    path = (root / file_path).resolve() if not Path(file_path).is_absolute() else Path(file_path)
    if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".exr", ".webp"):
        return path
    for ext in (".png", ".jpg", ".jpeg", ".PNG", ".JPG"):
        candidate = path.with_name(path.name + ext)
        if candidate.exists():
            return candidate
    return path.with_name(path.name + ".png")


def opengl_to_opencv(c2w: np.ndarray) -> np.ndarray:
    """[..., 4, 4] flip the camera's y and z axes (OpenGL -> OpenCV)."""
    out = c2w.copy()
    out[..., :3, 1:3] *= -1
    return out


def load(root: Path) -> RawScene:
    c2ws, Ks, widths, heights, paths = [], [], [], [], []
    splits: dict[str, np.ndarray] = {}
    for split in SPLITS:
        json_path = root / f"transforms_{split}.json"
        if not json_path.exists():
            continue
        meta = read_json(json_path)
        frames = meta.get("frames")
        if not isinstance(frames, list):
            raise SceneError(f"{json_path} has no 'frames' list; is this a NeRF-synthetic file?")
        start = len(paths)
        for i, frame in enumerate(frames):
            where = f"{json_path} frame {i}"
            if not isinstance(frame, dict) or "file_path" not in frame:
                raise SceneError(f"{where} has no file_path")
            if "transform_matrix" not in frame:
                raise SceneError(f"{where} has no transform_matrix")
            path = resolve_image(root, str(frame["file_path"]))
            if not path.exists():
                raise SceneError(f"{path} (listed in {json_path.name} frame {i}) does not exist; "
                                 "restore it or remove the frame")
            w, h = image_size(path)
            angle = frame.get("camera_angle_x", meta.get("camera_angle_x"))
            if angle is None:
                raise SceneError(f"{json_path} has no camera_angle_x; add the horizontal "
                                 "field of view in radians")
            angle = number(angle, f"{where} camera_angle_x")
            if not 0 < angle < math.pi:
                raise SceneError(f"{where}: camera_angle_x {angle} must be in (0, pi) radians")
            fx = 0.5 * w / math.tan(0.5 * angle)
            angle_y = frame.get("camera_angle_y", meta.get("camera_angle_y"))
            fy = 0.5 * h / math.tan(0.5 * number(angle_y, where)) if angle_y else fx
            c2ws.append(opengl_to_opencv(pose_matrix(frame["transform_matrix"], where)))
            Ks.append(intrinsics(fx, fy, w / 2.0, h / 2.0))
            widths.append(w)
            heights.append(h)
            paths.append(path)
        splits[split] = np.arange(start, len(paths), dtype=np.int64)
    if not splits.get("train", np.empty(0)).size:
        raise SceneError(f"{root / 'transforms_train.json'} lists no frames; add training views")
    n = len(paths)
    return RawScene(
        format="blender",
        c2w=np.stack(c2ws),
        K=np.stack(Ks),
        width=np.asarray(widths, dtype=np.int64),
        height=np.asarray(heights, dtype=np.int64),
        distortion=np.zeros((n, 6)),
        image_paths=paths,
        splits=splits,
        camera_models=["PINHOLE"] * n,
        normalisation=fixed_normalisation(OBJECT_HALF_EXTENT),
    )
