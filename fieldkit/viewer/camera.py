"""Browser camera <-> fieldkit ``Cameras``.

viser reports a client's camera as ``wxyz`` (the rotation R in ``p_world = R p_camera + t``),
``position`` (t), a vertical field of view ``fov`` in radians and the canvas ``aspect``
(width / height). Its camera axes follow OpenCV (x right, y down, z forward: the look
direction is R[:, 2], the up direction -R[:, 1]), the same convention as fieldkit, so the
camera-to-world matrix is simply ``[R | t]``. The scene is shown in box coordinates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fieldkit.data.cameras import Cameras
from fieldkit.splats.transform import quat_to_rotmat, rotmat_to_quat


@dataclass(frozen=True)
class ViewCamera:
    """One browser camera (box coordinates, OpenCV axes)."""

    wxyz: tuple[float, float, float, float]
    """Unit quaternion (w, x, y, z) of the camera-to-world rotation."""
    position: tuple[float, float, float]
    """[3] camera centre."""
    fov: float
    """Vertical field of view in radians."""
    aspect: float
    """Image width / height."""

    @classmethod
    def from_c2w(cls, c2w, fov: float, aspect: float) -> ViewCamera:
        """From a [4, 4] (or [3, 4]) camera-to-world matrix."""
        m = torch.as_tensor(np.asarray(c2w, dtype=np.float64)[:3, :4])
        q = rotmat_to_quat(m[:3, :3]).tolist()
        return cls(tuple(q), tuple(m[:3, 3].tolist()), float(fov), float(aspect))

    def c2w(self) -> np.ndarray:
        """[4, 4] float64 camera-to-world."""
        m = np.eye(4)
        m[:3, :3] = quat_to_rotmat(torch.tensor(self.wxyz, dtype=torch.float64)).numpy()
        m[:3, 3] = self.position
        return m

    def look_direction(self) -> np.ndarray:
        """[3] unit forward (+z) axis."""
        return self.c2w()[:3, 2]

    def up_direction(self) -> np.ndarray:
        """[3] unit up (-y) axis."""
        return -self.c2w()[:3, 1]


def render_size(aspect: float, long_side: int) -> tuple[int, int]:
    """(width, height) with the long side ``long_side`` pixels and width / height ~ aspect."""
    aspect = float(aspect) if aspect and math.isfinite(aspect) and aspect > 0 else 1.0
    if aspect >= 1:
        return int(long_side), max(1, round(long_side / aspect))
    return max(1, round(long_side * aspect)), int(long_side)


def focal_from_fov(fov: float, height: int) -> float:
    """Focal length in pixels of a vertical field of view ``fov`` (radians)."""
    return 0.5 * height / math.tan(0.5 * fov)


def view_to_cameras(view: ViewCamera, long_side: int) -> Cameras:
    """A one-camera ``Cameras`` rendering ``view`` with ``long_side`` pixels on its long side
    (square pixels, principal point at the image centre)."""
    w, h = render_size(view.aspect, long_side)
    f = focal_from_fov(view.fov, h)
    K = torch.tensor([[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]], dtype=torch.float32)
    return Cameras(c2w=torch.as_tensor(view.c2w(), dtype=torch.float32)[None], K=K[None],
                   width=torch.tensor([w]), height=torch.tensor([h]))


def cameras_to_view(cameras: Cameras, i: int = 0) -> ViewCamera:
    """The browser camera of camera ``i`` (vertical fov from fy and the height; the principal
    point is assumed central)."""
    h, w = int(cameras.height[i]), int(cameras.width[i])
    fy = float(cameras.K[i, 1, 1])
    fov = 2 * math.atan(0.5 * h / fy)
    return ViewCamera.from_c2w(cameras.c2w[i].detach().cpu().double().numpy(), fov, w / h)


def sub_camera(camera: Cameras, x0: int, y0: int, width: int, height: int) -> Cameras:
    """The pixels [y0, y0 + height) x [x0, x0 + width) of camera 0 as a camera of their own:
    same pose and focal length, principal point shifted. Rendering it gives exactly that
    region of the full image."""
    K = camera.K[:1].clone()
    K[0, 0, 2] -= x0
    K[0, 1, 2] -= y0
    return Cameras(c2w=camera.c2w[:1], K=K, width=torch.tensor([int(width)]),
                   height=torch.tensor([int(height)]))


def recentered(camera: Cameras, width: int) -> Cameras:
    """Camera 0 with its image narrowed to ``width`` pixels around the optical axis (side by
    side comparison: each half shows the centre of the view)."""
    K = camera.K[:1].clone()
    K[0, 0, 2] = width / 2
    return Cameras(c2w=camera.c2w[:1], K=K, width=torch.tensor([int(width)]),
                   height=camera.height[:1].clone())
