"""A smooth camera path through the training cameras (``fieldkit render --path interp``).

Keyframes are picked from the training cameras in a sensible order: by azimuth around the
orbit centre when the cameras surround it (the path then loops), otherwise along the main axis
of their positions (forward-facing captures; the path goes from one end to the other).
Positions follow a Catmull-Rom spline through the keyframes, so the path is C1 and passes
through every keyframe exactly; orientations are slerped between keyframes; intrinsics are the
first camera's, scaled to the requested size.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from fieldkit.data.cameras import Cameras
from fieldkit.export.paths import _cameras, _first_intrinsics, orbit_center
from fieldkit.splats.transform import quat_to_rotmat, rotmat_to_quat

SURROUND_DEG = 270.0
"""Cameras spread over at least this much azimuth around the centre are treated as an orbit."""


def keyframe_order(c2w: np.ndarray, center: np.ndarray) -> tuple[np.ndarray, bool]:
    """Indices of the cameras [N, 4, 4] in path order, and whether the path loops."""
    offsets = c2w[:, :3, 3] - center
    az = np.arctan2(offsets[:, 1], offsets[:, 0])
    order = np.argsort(az)
    gaps = np.diff(np.concatenate([az[order], [az[order][0] + 2 * math.pi]]))
    if 2 * math.pi - gaps.max() >= math.radians(SURROUND_DEG):
        return order, True
    pos = c2w[:, :3, 3] - c2w[:, :3, 3].mean(0)
    axis = np.linalg.svd(pos, full_matrices=False)[2][0]
    return np.argsort(pos @ axis), False


def _catmull_rom(p0, p1, p2, p3, t: float) -> np.ndarray:
    """Uniform Catmull-Rom between p1 (t = 0) and p2 (t = 1)."""
    t2, t3 = t * t, t * t * t
    return 0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                  + (3 * p1 - p0 - 3 * p2 + p3) * t3)


def _slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    if q0 @ q1 < 0:  # the short way round
        q1 = -q1
    dot = float(np.clip(q0 @ q1, -1.0, 1.0))
    if dot > 0.9995:
        q = q0 + t * (q1 - q0)
    else:
        theta = math.acos(dot)
        q = (math.sin((1 - t) * theta) * q0 + math.sin(t * theta) * q1) / math.sin(theta)
    return q / np.linalg.norm(q)


def interpolated_path(cameras: Cameras, n_frames: int, keyframes: int = 8,
                      width: int | None = None, height: int | None = None) -> Cameras:
    """``n_frames`` cameras along a smooth path through ``keyframes`` of ``cameras``."""
    if n_frames < 1 or keyframes < 2:
        raise ValueError("interpolated_path: n_frames >= 1 and keyframes >= 2")
    c2w_in = cameras.c2w.detach().cpu().double().numpy()
    order, loop = keyframe_order(c2w_in, orbit_center(cameras))
    k = min(keyframes, len(order))
    if k < 2:
        raise ValueError("interpolated_path needs at least two cameras")
    pick = order[np.linspace(0, len(order), k, endpoint=False).astype(int)] if loop else \
        order[np.round(np.linspace(0, len(order) - 1, k)).astype(int)]
    keys = c2w_in[pick]
    pos = keys[:, :3, 3]
    quats = rotmat_to_quat(torch.as_tensor(keys[:, :3, :3])).numpy()
    segments = k if loop else k - 1
    idx = (lambda i: i % k) if loop else (lambda i: min(max(i, 0), k - 1))  # noqa: E731
    out = []
    for f in range(n_frames):
        u = segments * f / (n_frames if loop else max(1, n_frames - 1))
        s = min(int(u), segments - 1)
        t = u - s
        p = _catmull_rom(pos[idx(s - 1)], pos[idx(s)], pos[idx(s + 1)], pos[idx(s + 2)], t)
        q = _slerp(quats[idx(s)], quats[idx(s + 1)], t)
        m = np.eye(4)
        m[:3, :3] = quat_to_rotmat(torch.as_tensor(q)[None]).numpy()[0]
        m[:3, 3] = p
        out.append(m)
    K, w, h = _first_intrinsics(cameras, width, height)
    return _cameras(np.stack(out), K, np.int64(w), np.int64(h))
