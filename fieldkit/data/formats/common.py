"""What every format loader returns, and the checks they share."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fieldkit.data.normalize import Normalisation
from fieldkit.errors import SceneError

HOLDOUT_EVERY = 8
"""Without a split in the dataset, every 8th image (0, 8, 16, ...) is held out for test."""


@dataclass
class RawScene:
    """A scene as a format describes it, in world units with OpenCV camera axes."""

    format: str
    """Short name of the source format: blender, ngp or colmap."""
    c2w: np.ndarray
    """[N, 4, 4] float64 camera-to-world."""
    K: np.ndarray
    """[N, 3, 3] float64 intrinsics at the native image size."""
    width: np.ndarray
    """[N] int64 native image width."""
    height: np.ndarray
    """[N] int64 native image height."""
    distortion: np.ndarray
    """[N, 6] float64 k1 k2 k3 k4 p1 p2 (zeros for pinholes)."""
    image_paths: list[Path]
    """N image files."""
    splits: dict[str, np.ndarray]
    """Split name -> int64 image indices."""
    camera_models: list[str]
    """N camera model names as the format calls them (PINHOLE, SIMPLE_RADIAL, OPENCV, ...)."""
    points: np.ndarray | None = None
    """[P, 3] float64 sparse world points (COLMAP), or None."""
    point_rgb: np.ndarray | None = None
    """[P, 3] uint8 colours of ``points``."""
    normalisation: Normalisation | None = None
    """A transform fixed by the format's convention; None means: derive one automatically."""
    bound: float | None = None
    """Scene bound in box units given by the format (instant-ngp aabb_scale), if any."""
    extras: dict = field(default_factory=dict)
    """Format-specific facts worth showing in ``scene info``."""


def read_json(path: Path) -> dict:
    """Parse a JSON object, turning every failure into one actionable line."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SceneError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SceneError(f"{path} could not be read ({e}); check the file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SceneError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: "
                         f"{e.msg}); fix or re-export the file") from None
    if not isinstance(data, dict):
        raise SceneError(f"{path} must hold a JSON object at the top level")
    return data


def number(value, where: str) -> float:
    """A finite float from a JSON value, or a SceneError naming ``where``."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise SceneError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(out):
        raise SceneError(f"{where} is {out}; fix the value in the file")
    return out


def pose_matrix(value, where: str) -> np.ndarray:
    """A 4x4 float64 matrix from a JSON 4x4 or 3x4 list, checked for NaN and singularity.

    Nearly-orthonormal rotations (rounding in the file) are projected onto the closest rotation.
    """
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise SceneError(f"{where}: transform_matrix is not a numeric matrix") from None
    if m.shape == (3, 4):
        m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
    if m.shape != (4, 4):
        raise SceneError(f"{where}: transform_matrix must be 4x4 or 3x4, got shape {m.shape}")
    return checked_pose(m, where)


def checked_pose(m: np.ndarray, where: str) -> np.ndarray:
    """Reject NaN/inf and singular camera-to-world matrices; re-orthonormalise rotations."""
    if not np.isfinite(m).all():
        raise SceneError(f"{where}: the camera pose contains NaN or infinity; "
                         "fix or drop this frame")
    rot = m[:3, :3]
    det = np.linalg.det(rot)
    if abs(det) < 1e-6:
        raise SceneError(f"{where}: the camera pose is singular (rotation determinant {det:.2g}); "
                         "fix or drop this frame")
    if det < 0:
        raise SceneError(f"{where}: the camera rotation is a reflection (determinant {det:.2g}); "
                         "check the axis convention of this frame")
    u, s, vt = np.linalg.svd(rot)
    if np.abs(s - s.mean()).max() > 0.05 * s.mean():
        raise SceneError(f"{where}: the camera rotation is sheared or unevenly scaled "
                         f"(singular values {np.round(s, 3).tolist()}); fix this frame")
    out = m.copy()
    out[:3, :3] = u @ vt
    out[3] = [0.0, 0.0, 0.0, 1.0]
    return out


def holdout_splits(n: int, every: int = HOLDOUT_EVERY) -> dict[str, np.ndarray]:
    """Every ``every``-th image for test, the rest for train."""
    idx = np.arange(n)
    test = idx[::every] if n > 1 else idx[:0]
    return {"train": np.setdiff1d(idx, test), "test": test}


def intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
