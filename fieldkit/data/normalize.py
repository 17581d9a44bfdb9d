"""Scene normalisation: the similarity transform from world units into the renderer's box.

``p_box = scale * R @ (p_world - center)``. The region of interest lands in [-1, 1]^3; the
whole scene (background included) lies within [-bound, bound]^3 with ``bound`` a power of two
(instant-ngp's ``aabb_scale``). The transform is stored with every run so that exports go back
to world units.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

ROI_TO_CAMERA_DISTANCE = 0.375
"""For inward-facing captures the region of interest has half-size 0.375 x the median camera
distance to the look-at point: the proportions of the NeRF-synthetic scenes (object in
[-1.5, 1.5]^3, cameras at radius 4) and of instant-ngp's colmap2nerf output."""


@dataclass
class Normalisation:
    """World -> box similarity transform."""

    scale: float
    """Box units per world unit."""
    rotation: np.ndarray
    """[3, 3] rotation applied after centring (aligns the capture's up with +z)."""
    center: np.ndarray
    """[3] world point that maps to the box origin."""
    bound: float = 1.0
    """Half-size of the box, in box units, that holds the whole scene (>= 1)."""

    def matrix(self) -> np.ndarray:
        """[4, 4] world -> box matrix."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = -self.scale * self.rotation @ self.center
        return m

    def inverse_matrix(self) -> np.ndarray:
        """[4, 4] box -> world matrix."""
        m = np.eye(4)
        m[:3, :3] = self.rotation.T / self.scale
        m[:3, 3] = self.center
        return m

    def to_box(self, points: Tensor) -> Tensor:
        """[..., 3] world points -> box points."""
        m = torch.as_tensor(self.matrix(), dtype=points.dtype, device=points.device)
        return points @ m[:3, :3].T + m[:3, 3]

    def to_world(self, points: Tensor) -> Tensor:
        """[..., 3] box points -> world points."""
        m = torch.as_tensor(self.inverse_matrix(), dtype=points.dtype, device=points.device)
        return points @ m[:3, :3].T + m[:3, 3]

    def as_dict(self) -> dict:
        return {"scale": float(self.scale), "rotation": self.rotation.tolist(),
                "center": self.center.tolist(), "bound": float(self.bound)}

    @classmethod
    def from_dict(cls, d: dict) -> Normalisation:
        return cls(float(d["scale"]), np.asarray(d["rotation"], dtype=np.float64),
                   np.asarray(d["center"], dtype=np.float64), float(d.get("bound", 1.0)))


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[3, 3] rotation taking unit vector ``a`` onto unit vector ``b`` (Rodrigues)."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    v, c = np.cross(a, b), float(a @ b)
    if c < -1 + 1e-9:  # opposite: rotate pi about any axis orthogonal to a
        axis = np.cross(a, [1.0, 0, 0] if abs(a[0]) < 0.9 else [0, 1.0, 0])
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def look_at_point(c2w: np.ndarray) -> tuple[np.ndarray, bool]:
    """Least-squares point closest to all optical axes ([N, 4, 4] OpenCV c2w).

    Returns the point and whether it is trustworthy: the axes must converge (well-conditioned
    system) and the point must lie in front of most cameras.
    """
    origins, forward = c2w[:, :3, 3], c2w[:, :3, 2]
    forward = forward / np.linalg.norm(forward, axis=1, keepdims=True)
    proj = np.eye(3)[None] - forward[:, :, None] * forward[:, None, :]  # [N, 3, 3]
    A, b = proj.sum(0), np.einsum("nij,nj->i", proj, origins)
    eig = np.linalg.eigvalsh(A)
    if len(c2w) < 2 or eig[0] < 0.02 * len(c2w):
        return origins.mean(0), False
    point = np.linalg.solve(A, b)
    in_front = ((point - origins) * forward).sum(1) > 0
    return point, bool(in_front.mean() > 0.75)


def power_of_two_at_least(x: float, cap: float = 64.0) -> float:
    return float(min(cap, 2 ** max(0, math.ceil(math.log2(max(x, 1.0) - 1e-9)))))


def auto_normalisation(
    c2w: np.ndarray,
    points: np.ndarray | None = None,
    orient: bool = True,
    bound: float | None = None,
) -> Normalisation:
    """Centre, orient and scale a capture of unknown extent.

    ``c2w``: [N, 4, 4] OpenCV camera-to-world in world units; ``points``: optional [P, 3] sparse
    points (e.g. COLMAP). The centre is the look-at point of inward-facing captures, otherwise
    the median sparse point (or the mean camera). ``orient`` rotates the mean camera up vector
    onto +z. ``bound`` fixes the scene bound (e.g. from ``aabb_scale``); by default it is derived
    from the cameras and the sparse points.
    """
    up = -c2w[:, :3, 1].mean(0)  # OpenCV y points down
    rotation = np.eye(3)
    if orient and np.linalg.norm(up) > 0.3:
        rotation = rotation_between(up, np.array([0.0, 0.0, 1.0]))

    center, inward = look_at_point(c2w)
    cam_dist = np.linalg.norm(c2w[:, :3, 3] - center, axis=1)
    if inward:
        half = ROI_TO_CAMERA_DISTANCE * float(np.median(cam_dist))
    elif points is not None and len(points) >= 8:
        center = np.median(points, axis=0)
        spread = np.percentile(np.abs(points - center), 90, axis=0)
        half = float(spread.max())
    else:
        center = c2w[:, :3, 3].mean(0)
        half = float(np.abs(c2w[:, :3, 3] - center).max()) or 1.0
    scale = 1.0 / max(half, 1e-9)

    if bound is None:
        to_box = lambda p: scale * (p - center) @ rotation.T  # noqa: E731
        extent = [np.abs(to_box(c2w[:, :3, 3])).max()]
        if points is not None and len(points):
            extent.append(np.percentile(np.abs(to_box(points)).max(1), 95))
        bound = power_of_two_at_least(float(max(extent)))
    return Normalisation(scale, rotation, np.asarray(center, dtype=np.float64), float(bound))


def fixed_normalisation(half_extent: float, bound: float = 1.0) -> Normalisation:
    """A box centred at the world origin with the given half-size, axes unchanged."""
    return Normalisation(1.0 / half_extent, np.eye(3), np.zeros(3), bound)
