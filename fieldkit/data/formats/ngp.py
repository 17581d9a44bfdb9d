"""instant-ngp / nerfstudio scenes: one transforms.json beside the images.

Intrinsics may be global or per frame: fl_x/fl_y/cx/cy/w/h, or camera_angle_x/_y. Distortion is
OpenCV k1 k2 [k3 k4] p1 p2. ``aabb_scale`` gives the scene bound. Poses are camera-to-world in
OpenGL camera axes (as NeRF-synthetic). Frames whose image is missing are skipped with one
warning that counts them. nerfstudio's train/val/test_filenames lists give the split;
otherwise every 8th image is held out for test.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fieldkit.data.formats.blender import opengl_to_opencv, resolve_image
from fieldkit.data.formats.common import (RawScene, holdout_splits, intrinsics, number,
                                          pose_matrix, read_json)
from fieldkit.data.images import image_size
from fieldkit.errors import SceneError, warn

FILENAME = "transforms.json"
SUPPORTED_MODELS = ("PINHOLE", "OPENCV", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")


def detect(root: Path) -> bool:
    return (root / FILENAME).is_file()


def _camera_model(params: dict, where: str) -> str:
    model = str(params.get("camera_model", "OPENCV")).upper()
    if params.get("is_fisheye") or model not in SUPPORTED_MODELS:
        name = "OPENCV_FISHEYE" if params.get("is_fisheye") else model
        raise SceneError(f"{where}: camera model {name} is not supported (supported: "
                         f"{', '.join(SUPPORTED_MODELS)}); undistort the images to a pinhole "
                         "camera first")
    return model


def _intrinsics(params: dict, img: Path, where: str) -> tuple[np.ndarray, int, int]:
    """K, width and height (from the file, else from the image header)."""
    if "w" in params and "h" in params:
        w, h = round(number(params["w"], f"{where} w")), round(number(params["h"], f"{where} h"))
    else:
        w, h = image_size(img)
    if "fl_x" in params:
        fx = number(params["fl_x"], f"{where} fl_x")
        fy = number(params.get("fl_y", fx), f"{where} fl_y")
    elif "camera_angle_x" in params:
        fx = 0.5 * w / math.tan(0.5 * number(params["camera_angle_x"], f"{where} camera_angle_x"))
        angle_y = params.get("camera_angle_y")
        fy = 0.5 * h / math.tan(0.5 * number(angle_y, f"{where} camera_angle_y")) if angle_y else fx
    else:
        raise SceneError(f"{where} has no focal length; add fl_x/fl_y or camera_angle_x")
    if fx <= 0 or fy <= 0:
        raise SceneError(f"{where}: focal length must be positive, got fl_x={fx}, fl_y={fy}")
    cx = number(params.get("cx", w / 2.0), f"{where} cx")
    cy = number(params.get("cy", h / 2.0), f"{where} cy")
    return intrinsics(fx, fy, cx, cy), w, h


def _splits(meta: dict, names: list[str], json_path: Path) -> dict[str, np.ndarray]:
    lists = {s: meta.get(f"{s}_filenames") for s in ("train", "val", "test")}
    if lists["train"] is None:
        return holdout_splits(len(names))
    index = {name: i for i, name in enumerate(names)}
    out = {}
    for split, files in lists.items():
        if files is None:
            continue
        idx = [index[Path(f).as_posix()] for f in files if Path(f).as_posix() in index]
        out[split] = np.asarray(sorted(idx), dtype=np.int64)
    if not out["train"].size:
        raise SceneError(f"{json_path}: train_filenames names no usable frame")
    return out


def load(root: Path) -> RawScene:
    json_path = root / FILENAME
    meta = read_json(json_path)
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise SceneError(f"{json_path} has no frames; it needs a non-empty 'frames' list")
    c2ws, Ks, ws, hs, dists, paths, models, names = [], [], [], [], [], [], [], []
    missing = []
    for i, frame in enumerate(frames):
        where = f"{json_path} frame {i}"
        if not isinstance(frame, dict) or "file_path" not in frame:
            raise SceneError(f"{where} has no file_path")
        if "transform_matrix" not in frame:
            raise SceneError(f"{where} has no transform_matrix")
        path = resolve_image(root, str(frame["file_path"]))
        if not path.exists():
            missing.append(path)
            continue
        params = {**meta, **frame}
        models.append(_camera_model(params, where))
        K, w, h = _intrinsics(params, path, where)
        dists.append([number(params.get(k, 0.0), f"{where} {k}") for k in DISTORTION_KEYS])
        c2ws.append(opengl_to_opencv(pose_matrix(frame["transform_matrix"], where)))
        Ks.append(K)
        ws.append(w)
        hs.append(h)
        paths.append(path)
        names.append(Path(str(frame["file_path"])).as_posix())
    if missing:
        example = missing[0].relative_to(root) if missing[0].is_relative_to(root) else missing[0]
        if not paths:
            raise SceneError(f"{json_path}: none of its {len(frames)} frames has an image on "
                             f"disk (e.g. {example}); copy the images next to it")
        warn(f"{json_path}: skipping {len(missing)} of {len(frames)} frames whose image is "
             f"missing (e.g. {example})")
    bound = meta.get("aabb_scale")
    return RawScene(
        format="ngp",
        c2w=np.stack(c2ws),
        K=np.stack(Ks),
        width=np.asarray(ws, dtype=np.int64),
        height=np.asarray(hs, dtype=np.int64),
        distortion=np.asarray(dists, dtype=np.float64),
        image_paths=paths,
        splits=_splits(meta, names, json_path),
        camera_models=models,
        bound=None if bound is None else max(1.0, number(bound, f"{json_path} aabb_scale")),
        extras={"aabb_scale": bound, "frames_listed": len(frames),
                "frames_missing": len(missing)},
    )
