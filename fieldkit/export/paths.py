"""Camera paths for videos: orbit, LLFF-style spiral, and camera paths read from JSON.

Every function returns ``fieldkit.data.cameras.Cameras`` (pinholes, ``distortion=None``) in box
coordinates (the normalised scene, world up ~ +z), OpenCV camera axes (x right, y down,
z forward), float32 ``c2w`` [N, 4, 4] and ``K`` [N, 3, 3], int64 ``width``/``height`` [N].
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from fieldkit.data.cameras import Cameras, opengl_to_opencv
from fieldkit.data.formats.common import checked_pose, number
from fieldkit.data.normalize import Normalisation, look_at_point
from fieldkit.errors import FieldkitError

WORLD_UP = np.array([0.0, 0.0, 1.0])
MAX_ELEVATION_DEG = 89.0
"""Orbits are kept off the poles, where 'up' is undefined."""
SPIRAL_PERCENTILE = 90.0
"""Spiral radii: this percentile of |camera offset| from the mean pose, per axis (as LLFF)."""
SPIRAL_ZRATE = 0.5
"""In-and-out (depth) oscillations per rotation of the spiral (as LLFF)."""
SPIRAL_MIN_DEPTH_RATIO = 0.25
"""The in-and-out amplitude is at least this fraction of the sideways radius (captures whose
cameras share one depth, e.g. a planar grid or a ring seen from its mean pose, still get it)."""


# ---------------------------------------------------------------------- helpers
def look_at(position: np.ndarray, target: np.ndarray, up: np.ndarray = WORLD_UP) -> np.ndarray:
    """[4, 4] OpenCV camera-to-world at ``position`` [3] looking at ``target`` [3], with the
    image's up (-y) as close to ``up`` [3] as possible."""
    z = target - position
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:  # looking along up: any right vector will do
        x = np.cross(z, [1.0, 0.0, 0.0] if abs(z[0]) < 0.9 else [0.0, 1.0, 0.0])
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, position
    return m


def _output_size(w0: int, h0: int, width: int | None, height: int | None) -> tuple[int, int]:
    """Requested size; a single given side keeps the aspect ratio of ``w0`` x ``h0``."""
    if width is None and height is None:
        return w0, h0
    if height is None:
        return int(width), max(1, round(int(width) * h0 / w0))
    if width is None:
        return max(1, round(int(height) * w0 / h0)), int(height)
    return int(width), int(height)


def _scaled_K(K: np.ndarray, w0: int, h0: int, w: int, h: int) -> np.ndarray:
    """[3, 3] intrinsics for an image resampled from ``w0`` x ``h0`` to ``w`` x ``h``."""
    K = K.copy()
    K[0] *= w / w0
    K[1] *= h / h0
    K[2] = [0.0, 0.0, 1.0]
    return K


def _first_intrinsics(cameras: Cameras, width: int | None, height: int | None
                      ) -> tuple[np.ndarray, int, int]:
    """The first camera's K scaled to the requested size, and that size."""
    w0, h0 = int(cameras.width[0]), int(cameras.height[0])
    w, h = _output_size(w0, h0, width, height)
    K0 = cameras.K[0].detach().cpu().double().numpy()
    return _scaled_K(K0, w0, h0, w, h), w, h


def _cameras(c2w: np.ndarray, K: np.ndarray, w: np.ndarray, h: np.ndarray) -> Cameras:
    """Cameras from [N, 4, 4] c2w, [N, 3, 3] K (or one [3, 3]) and [N] sizes (or scalars)."""
    n = len(c2w)
    K = np.array(np.broadcast_to(K, (n, 3, 3)))
    return Cameras(
        c2w=torch.as_tensor(np.array(c2w), dtype=torch.float32),
        K=torch.as_tensor(K, dtype=torch.float32),
        width=torch.as_tensor(np.broadcast_to(w, (n,)).copy(), dtype=torch.int64),
        height=torch.as_tensor(np.broadcast_to(h, (n,)).copy(), dtype=torch.int64),
        distortion=None,
    )


def orbit_center(cameras: Cameras) -> np.ndarray:
    """[3] the point the cameras look at (least squares over their optical axes) when the
    axes converge in front of them, else the box origin."""
    c2w = cameras.c2w.detach().cpu().double().numpy()
    point, trusted = look_at_point(c2w)
    return point if trusted else np.zeros(3)


# ---------------------------------------------------------------------- orbit
def orbit_path(cameras: Cameras, n_frames: int, width: int | None = None,
               height: int | None = None, elevation_deg: float | None = None,
               radius: float | None = None) -> Cameras:
    """``n_frames`` cameras evenly spaced on a circle around +z, looking at the centre.

    The centre is ``orbit_center(cameras)``; the radius (unless given) is the median distance
    of the input cameras to it, the elevation (unless given) their median elevation above the
    centre. Frame k is at azimuth ``a0 + 360 k / n_frames`` degrees, starting at the first
    input camera's azimuth, so the path loops seamlessly. Intrinsics: the first input camera's,
    scaled to ``width`` x ``height`` (default: its own size; one side keeps the aspect).
    """
    if n_frames < 1:
        raise ValueError("orbit_path: n_frames must be >= 1")
    center = orbit_center(cameras)
    offsets = cameras.positions.detach().cpu().double().numpy() - center  # [N, 3]
    dist = np.linalg.norm(offsets, axis=1)
    r = float(np.median(dist)) if radius is None else float(radius)
    if not r > 0:
        raise ValueError("orbit_path: the cameras sit on the orbit centre; give a radius")
    if elevation_deg is None:
        elev = np.degrees(np.arcsin(np.clip(offsets[:, 2] / np.maximum(dist, 1e-12), -1, 1)))
        elevation_deg = float(np.median(elev))
    el = math.radians(float(np.clip(elevation_deg, -MAX_ELEVATION_DEG, MAX_ELEVATION_DEG)))
    az0 = math.atan2(offsets[0, 1], offsets[0, 0])
    c2w = []
    for k in range(n_frames):
        az = az0 + 2 * math.pi * k / n_frames
        pos = center + r * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az),
                                     math.sin(el)])
        c2w.append(look_at(pos, center))
    K, w, h = _first_intrinsics(cameras, width, height)
    return _cameras(np.stack(c2w), K, np.int64(w), np.int64(h))


# ---------------------------------------------------------------------- spiral
def _mean_pose(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean camera position [3] and an OpenCV rotation [3, 3] facing the mean view direction
    with the cameras' mean up."""
    forward = c2w[:, :3, 2].mean(0)
    forward = forward / np.linalg.norm(forward)
    up = -c2w[:, :3, 1].mean(0)  # OpenCV y is down
    up = up / np.linalg.norm(up) if np.linalg.norm(up) > 1e-6 else WORLD_UP
    pos = c2w[:, :3, 3].mean(0)
    return pos, look_at(pos, pos + forward, up)[:3, :3]


def spiral_path(cameras: Cameras, n_frames: int, width: int | None = None,
                height: int | None = None, n_rotations: float = 2.0) -> Cameras:
    """LLFF/nerfstudio spiral for forward-facing captures: ``n_frames`` cameras circling the
    mean pose ``n_rotations`` times while moving in and out along its view direction, all
    looking at a focus point ahead of it.

    Radii per mean-pose axis (right, down, forward) are the 90th percentile of the input
    cameras' offsets from the mean pose (depth at least ``SPIRAL_MIN_DEPTH_RATIO`` of the
    sideways radius). The focus point is the look-at point of the cameras
    when their axes converge, else where the mean view ray passes the box origin. Intrinsics as
    in ``orbit_path``.
    """
    if n_frames < 1:
        raise ValueError("spiral_path: n_frames must be >= 1")
    c2w_in = cameras.c2w.detach().cpu().double().numpy()
    mean_pos, R = _mean_pose(c2w_in)
    forward, up = R[:, 2], -R[:, 1]
    local = (c2w_in[:, :3, 3] - mean_pos) @ R  # [N, 3] offsets in the mean camera's axes
    rads = np.percentile(np.abs(local), SPIRAL_PERCENTILE, axis=0)

    point, trusted = look_at_point(c2w_in)
    focus = float(((point if trusted else np.zeros(3)) - mean_pos) @ forward)
    if not focus > 1e-6:  # origin behind the mean camera: fall back to the camera spread
        focus = float(np.median(np.linalg.norm(c2w_in[:, :3, 3] - c2w_in[:, :3, 3].mean(0),
                                               axis=1))) * 4 or 1.0
    if rads[:2].max() < 1e-6 * focus:  # all cameras at one spot: a small spiral anyway
        rads = np.array([0.05, 0.05, 0.02]) * focus
    rads[2] = max(rads[2], SPIRAL_MIN_DEPTH_RATIO * rads[:2].max())  # always move in and out
    target = mean_pos + focus * forward

    c2w = []
    for theta in np.linspace(0.0, 2 * math.pi * n_rotations, n_frames, endpoint=False):
        offset = np.array([math.cos(theta), -math.sin(theta),
                           -math.sin(theta * SPIRAL_ZRATE)]) * rads
        c2w.append(look_at(mean_pos + R @ offset, target, up))
    K, w, h = _first_intrinsics(cameras, width, height)
    return _cameras(np.stack(c2w), K, np.int64(w), np.int64(h))


# ---------------------------------------------------------------------- JSON camera paths
def _bad(path: Path, what: str) -> FieldkitError:
    return FieldkitError(f"{path}: {what}; fix the camera path file")


def _frame_size(frame: dict, w_def: int, h_def: int, where: str) -> tuple[int, int]:
    w = int(number(frame.get("width", w_def), f"{where}.width"))
    h = int(number(frame.get("height", h_def), f"{where}.height"))
    if w < 1 or h < 1:
        raise FieldkitError(f"{where}: image size {w}x{h} must be positive; fix the file")
    return w, h


def _fieldkit_frames(path: Path, frames: list, default: Cameras, width, height) -> Cameras:
    w0, h0 = int(default.width[0]), int(default.height[0])
    K0 = default.K[0].detach().cpu().double().numpy()
    c2ws, Ks, ws, hs = [], [], [], []
    for i, frame in enumerate(frames):
        where = f"{path} frame {i}"
        if not isinstance(frame, dict) or "c2w" not in frame:
            raise _bad(path, f"frame {i} is not an object with a 'c2w' 4x4 matrix")
        try:
            m = np.asarray(frame["c2w"], dtype=np.float64)
        except (TypeError, ValueError):
            raise _bad(path, f"frame {i}: c2w is not a numeric matrix") from None
        if m.shape == (3, 4):
            m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
        if m.shape != (4, 4):
            raise _bad(path, f"frame {i}: c2w must be 4x4 or 3x4, got shape {m.shape}")
        c2ws.append(checked_pose(m, where))
        fw, fh = _frame_size(frame, w0, h0, where)
        K = _scaled_K(K0, w0, h0, fw, fh)
        if "fx" in frame or "fy" in frame:
            fx = number(frame.get("fx", frame.get("fy")), f"{where}.fx")
            K[0, 0] = fx
            K[1, 1] = number(frame.get("fy", fx), f"{where}.fy")
        for key, (r, c) in (("cx", (0, 2)), ("cy", (1, 2))):
            if key in frame:
                K[r, c] = number(frame[key], f"{where}.{key}")
        w, h = _output_size(fw, fh, width, height)
        Ks.append(_scaled_K(K, fw, fh, w, h))
        ws.append(w)
        hs.append(h)
    return _cameras(np.stack(c2ws), np.stack(Ks), np.array(ws), np.array(hs))


def nerfstudio_path(path: Path, data: dict, default: Cameras, width: int | None = None,
                    height: int | None = None) -> Cameras:
    """The cameras of nerfstudio's camera_path.json ``data`` (read from ``path``), OpenCV
    axes, in the file's frame; ``default`` gives the size and focal length it leaves out."""
    frames = data["camera_path"]
    if not isinstance(frames, list) or not frames:
        raise _bad(path, "'camera_path' must be a non-empty list of cameras")
    camera_type = data.get("camera_type", "perspective")
    if camera_type != "perspective":
        raise FieldkitError(f"{path}: camera_type {camera_type!r} is not supported (only "
                            "'perspective'); re-export the path with a perspective camera")
    w0, h0 = int(default.width[0]), int(default.height[0])
    rw = int(number(data.get("render_width", w0), f"{path} render_width"))
    rh = int(number(data.get("render_height", h0), f"{path} render_height"))
    if rw < 1 or rh < 1:
        raise _bad(path, f"render size {rw}x{rh} must be positive")
    w, h = _output_size(rw, rh, width, height)
    default_fy = float(default.K[0, 1, 1]) * h / h0
    c2ws, Ks = [], []
    for i, cam in enumerate(frames):
        where = f"{path} camera_path[{i}]"
        if not isinstance(cam, dict) or "camera_to_world" not in cam:
            raise _bad(path, f"camera_path[{i}] has no 'camera_to_world'")
        try:
            m = np.asarray(cam["camera_to_world"], dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise _bad(path, f"camera_path[{i}].camera_to_world is not a list of numbers") \
                from None
        if m.size not in (12, 16):
            raise _bad(path, f"camera_path[{i}].camera_to_world has {m.size} numbers, "
                             "expected 16 (row-major 4x4)")
        m = np.vstack([m.reshape(-1, 4)[:3], [0.0, 0.0, 0.0, 1.0]])
        c2ws.append(checked_pose(m, where))
        if "fov" in cam:
            fov = number(cam["fov"], f"{where}.fov")
            if not 0 < fov < 180:
                raise _bad(path, f"camera_path[{i}].fov is {fov} degrees, expected 0..180")
            f = 0.5 * h / math.tan(math.radians(fov) / 2)  # nerfstudio: vertical field of view
        else:
            f = default_fy
        Ks.append(np.array([[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]]))
    c2w = opengl_to_opencv(torch.as_tensor(np.stack(c2ws))).numpy()
    return _cameras(c2w, np.stack(Ks), np.int64(w), np.int64(h))


def load_path_json(path: Path, default_cameras: Cameras, width: int | None = None,
                   height: int | None = None, nerfstudio_frame: Normalisation | None = None
                   ) -> Cameras:
    """Read a camera path in box coordinates.

    Two formats are accepted:

    - fieldkit: a JSON list (or ``{"frames": [...]}``) of frames ``{"c2w": 4x4 OpenCV
      camera-to-world, optional "fx", "fy", "cx", "cy", "width", "height"}``; missing intrinsics
      and sizes come from ``default_cameras[0]`` (scaled to the frame's size);
    - nerfstudio ``camera_path.json``: ``{"render_width", "render_height", "camera_type":
      "perspective", "camera_path": [{"camera_to_world": 16 floats row-major (OpenGL axes),
      "fov": vertical degrees}]}``; principal point at the image centre.

    ``width``/``height`` override the output size (one side keeps the aspect ratio), K scaled
    to match. ``nerfstudio_frame``: a nerfstudio path's cameras are in the box of this
    similarity (from ``default_cameras``' coordinates) and are brought back from it. A
    malformed file raises a one-line ``FieldkitError`` naming it.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FieldkitError(f"camera path {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FieldkitError(f"camera path {path} could not be read ({e})") from None
    except json.JSONDecodeError as e:
        raise _bad(path, f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") \
            from None
    if isinstance(data, dict) and "camera_path" in data:
        cams = nerfstudio_path(path, data, default_cameras, width, height)
        return cams if nerfstudio_frame is None else cams.to_world(nerfstudio_frame)
    frames = data.get("frames") if isinstance(data, dict) else data
    if not isinstance(frames, list) or not frames:
        raise _bad(path, "expected a non-empty JSON list of frames with 'c2w' or a nerfstudio "
                         "camera path with 'camera_path'")
    return _fieldkit_frames(path, frames, default_cameras, width, height)
