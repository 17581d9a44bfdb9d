"""COLMAP scenes: images/ plus a sparse model in sparse/0/ or sparse/ (.bin or .txt).

COLMAP already uses OpenCV camera axes and corner-origin pixel coordinates; poses are stored
world-to-camera and are inverted here. The sparse points (xyz, rgb) are kept for splat
initialisation and for choosing the region of interest. Images are ordered by name and every
8th is held out for test.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fieldkit.data.formats.colmap_io import ColmapCamera, read_model
from fieldkit.data.formats.common import RawScene, checked_pose, holdout_splits, intrinsics
from fieldkit.errors import SceneError

SUPPORTED_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")


def sparse_dir(root: Path) -> Path | None:
    for candidate in (root / "sparse" / "0", root / "sparse"):
        if any((candidate / f"cameras.{ext}").is_file() for ext in ("bin", "txt")):
            return candidate
    return None


def detect(root: Path) -> bool:
    return sparse_dir(root) is not None


def camera_intrinsics(cam: ColmapCamera, where: str) -> tuple[np.ndarray, np.ndarray]:
    """K [3, 3] and packed distortion [6] (k1 k2 k3 k4 p1 p2) of a supported COLMAP camera."""
    p = [float(v) for v in cam.params]
    dist = np.zeros(6)
    if cam.model == "SIMPLE_PINHOLE":
        K = intrinsics(p[0], p[0], p[1], p[2])
    elif cam.model == "PINHOLE":
        K = intrinsics(p[0], p[1], p[2], p[3])
    elif cam.model == "SIMPLE_RADIAL":
        K, dist[0] = intrinsics(p[0], p[0], p[1], p[2]), p[3]
    elif cam.model == "RADIAL":
        K, dist[:2] = intrinsics(p[0], p[0], p[1], p[2]), p[3:5]
    elif cam.model == "OPENCV":
        K = intrinsics(p[0], p[1], p[2], p[3])
        dist[0], dist[1], dist[4], dist[5] = p[4], p[5], p[6], p[7]
    else:
        raise SceneError(f"{where}: camera {cam.id} uses COLMAP model {cam.model}, which is not "
                         f"supported (supported: {', '.join(SUPPORTED_MODELS)}); run "
                         "`colmap image_undistorter` or re-run COLMAP with one of those models")
    if not np.isfinite(K).all() or not np.isfinite(dist).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise SceneError(f"{where}: camera {cam.id} has invalid parameters {p}; "
                         "re-run the reconstruction")
    return K, dist


def load(root: Path) -> RawScene:
    sparse = sparse_dir(root)
    if sparse is None:
        raise SceneError(f"{root} has no sparse/0/cameras.bin or .txt")
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise SceneError(f"{root} has a COLMAP model but no images/ folder; put the photos "
                         "in images/")
    cameras, images, points = read_model(sparse)
    ext = "bin" if (sparse / "cameras.bin").is_file() else "txt"
    cam_file, img_file = sparse / f"cameras.{ext}", sparse / f"images.{ext}"
    if not images:
        raise SceneError(f"{img_file} lists no registered images; the reconstruction failed")
    c2ws, Ks, ws, hs, dists, paths, models = [], [], [], [], [], [], []
    for image in sorted(images.values(), key=lambda im: im.name):
        where = f"{img_file} image {image.name!r}"
        if image.camera_id not in cameras:
            raise SceneError(f"{where} refers to camera {image.camera_id}, which {cam_file.name} "
                             "does not define")
        cam = cameras[image.camera_id]
        K, dist = camera_intrinsics(cam, str(cam_file))
        path = images_dir / image.name
        if not path.is_file():
            raise SceneError(f"{path} (registered in {img_file.name}) does not exist; restore "
                             "it or re-run the reconstruction without it")
        w2c = image.world_to_camera()
        if not np.isfinite(w2c).all():
            raise SceneError(f"{where}: the pose contains NaN or infinity")
        try:
            c2w = np.linalg.inv(w2c)
        except np.linalg.LinAlgError:
            raise SceneError(f"{where}: the pose is singular; re-run the reconstruction") from None
        c2ws.append(checked_pose(c2w, where))
        Ks.append(K)
        dists.append(dist)
        ws.append(cam.width)
        hs.append(cam.height)
        paths.append(path)
        models.append(cam.model)
    return RawScene(
        format="colmap",
        c2w=np.stack(c2ws),
        K=np.stack(Ks),
        width=np.asarray(ws, dtype=np.int64),
        height=np.asarray(hs, dtype=np.int64),
        distortion=np.stack(dists),
        image_paths=paths,
        splits=holdout_splits(len(paths)),
        camera_models=models,
        points=points.xyz.astype(np.float64),
        point_rgb=points.rgb.astype(np.uint8),
        extras={"sparse_dir": str(sparse), "model_format": ext},
    )
