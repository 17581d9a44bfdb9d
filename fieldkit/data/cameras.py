"""Cameras: poses, intrinsics, image sizes and distortion, and ray generation.

Convention (used everywhere inside fieldkit): OpenCV camera axes (x right, y down, z forward)
and camera-to-world 4x4 matrices. Pixel coordinates are continuous with the top-left corner of
the image at (0, 0), so the centre of pixel (row i, column j) is (j + 0.5, i + 0.5). Loaders
convert other conventions (Blender/OpenGL axes, COLMAP world-to-camera) into this one.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from fieldkit.data import distortion as dist


@dataclass
class Cameras:
    """A batch of N pinhole cameras with optional OpenCV distortion."""

    c2w: Tensor
    """[N, 4, 4] float camera-to-world, OpenCV axes."""
    K: Tensor
    """[N, 3, 3] float intrinsics (fx, fy, cx, cy) in pixels."""
    width: Tensor
    """[N] int64 image widths in pixels."""
    height: Tensor
    """[N] int64 image heights in pixels."""
    distortion: Tensor | None = None
    """[N, 6] float (k1, k2, k3, k4, p1, p2), or None for ideal pinholes."""

    def __post_init__(self) -> None:
        n = self.c2w.shape[0]
        assert self.c2w.shape == (n, 4, 4), self.c2w.shape
        assert self.K.shape == (n, 3, 3), self.K.shape
        assert self.width.shape == (n,) and self.height.shape == (n,)
        if self.distortion is not None:
            assert self.distortion.shape == (n, dist.NUM_PARAMS), self.distortion.shape
            if dist.is_zero(self.distortion):
                self.distortion = None

    # ------------------------------------------------------------------ container basics
    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, idx: int | slice | Tensor) -> Cameras:
        """Subset of cameras; an int keeps the batch dimension (N = 1)."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1 if idx != -1 else None)
        return Cameras(
            c2w=self.c2w[idx],
            K=self.K[idx],
            width=self.width[idx],
            height=self.height[idx],
            distortion=None if self.distortion is None else self.distortion[idx],
        )

    def to(self, device: torch.device | str) -> Cameras:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Cameras(*(move(t) for t in (self.c2w, self.K, self.width, self.height)),
                       distortion=move(self.distortion))

    @property
    def device(self) -> torch.device:
        return self.c2w.device

    @property
    def positions(self) -> Tensor:
        """[N, 3] camera centres in world space."""
        return self.c2w[:, :3, 3]

    # ------------------------------------------------------------------ geometry edits
    def resized(self, width: Tensor, height: Tensor) -> Cameras:
        """Cameras for images resampled to ``width`` x ``height`` ([N] each). With corner-origin
        pixel coordinates, resizing scales fx, cx by new_w/w and fy, cy by new_h/h exactly."""
        sx = width.to(self.K.dtype) / self.width.to(self.K.dtype)
        sy = height.to(self.K.dtype) / self.height.to(self.K.dtype)
        K = self.K.clone()
        K[:, 0, :] *= sx[:, None]
        K[:, 1, :] *= sy[:, None]
        return replace(self, K=K, width=width.clone(), height=height.clone())

    def cropped(self, x0: int, y0: int, width: int, height: int) -> Cameras:
        """The ``width`` x ``height`` window of every image whose top-left pixel is (x0, y0):
        the principal point moves, nothing else (distortion is kept as it is)."""
        K = self.K.clone()
        K[:, 0, 2] -= x0
        K[:, 1, 2] -= y0
        n = len(self)
        return replace(self, K=K, width=self.width.new_full((n,), width),
                       height=self.height.new_full((n,), height))

    def transformed(self, world_to_new: Tensor, scale: float) -> Cameras:
        """Apply a similarity transform ``p' = world_to_new @ p`` (4x4, rotation times ``scale``
        plus translation). Camera axes stay orthonormal; only positions are scaled."""
        T = world_to_new.to(self.c2w)
        c2w = self.c2w.clone()
        c2w[:, :3, :3] = (T[:3, :3] / scale) @ self.c2w[:, :3, :3]
        c2w[:, :3, 3] = self.c2w[:, :3, 3] @ T[:3, :3].T + T[:3, 3]
        return replace(self, c2w=c2w)

    def to_box(self, norm) -> Cameras:
        """World cameras -> the box of ``norm`` (a ``Normalisation``)."""
        return self.transformed(torch.from_numpy(norm.matrix()), norm.scale)

    def to_world(self, norm) -> Cameras:
        """Cameras in the box of ``norm`` -> world units."""
        return self.transformed(torch.from_numpy(norm.inverse_matrix()), 1.0 / norm.scale)

    # ------------------------------------------------------------------ pixels <-> rays
    def pixel_centers(self, cam: int) -> Tensor:
        """[H, W, 2] continuous (x, y) coordinates of the pixel centres of camera ``cam``."""
        h, w = int(self.height[cam]), int(self.width[cam])
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=torch.float32, device=self.device) + 0.5,
            torch.arange(w, dtype=torch.float32, device=self.device) + 0.5,
            indexing="ij",
        )
        return torch.stack([xs, ys], dim=-1)

    def ray_length_per_depth(self, cam: int) -> Tensor:
        """[H, W] length of each pixel's ray per unit of view depth (z along the optical axis)
        of pinhole camera ``cam``: ray distance = view depth x this."""
        K, xy = self.K[cam], self.pixel_centers(cam)
        return torch.sqrt(1 + ((xy[..., 0] - K[0, 2]) / K[0, 0]) ** 2
                          + ((xy[..., 1] - K[1, 2]) / K[1, 1]) ** 2)

    def pixels_to_camera(self, cam_idx: Tensor, xy: Tensor) -> Tensor:
        """Undistorted camera-space directions with z = 1.

        ``cam_idx``: [R] int64 camera per pixel; ``xy``: [R, 2] continuous pixel coords.
        Returns [R, 3] (x/z, y/z, 1) in the camera's OpenCV axes.
        """
        K = self.K[cam_idx]  # [R, 3, 3]
        x = (xy[:, 0] - K[:, 0, 2]) / K[:, 0, 0]
        y = (xy[:, 1] - K[:, 1, 2]) / K[:, 1, 1]
        normalised = torch.stack([x, y], dim=-1)
        if self.distortion is not None:
            normalised = dist.undistort(normalised, self.distortion[cam_idx])
        return torch.cat([normalised, torch.ones_like(normalised[:, :1])], dim=-1)

    def rays(self, cam_idx: Tensor, xy: Tensor) -> tuple[Tensor, Tensor]:
        """World-space rays through pixels.

        ``cam_idx``: [R] int64; ``xy``: [R, 2] continuous pixel coords (pixel centres are at
        +0.5). Returns origins [R, 3] and unit directions [R, 3].
        """
        d_cam = self.pixels_to_camera(cam_idx, xy)  # [R, 3]
        c2w = self.c2w[cam_idx]  # [R, 4, 4]
        dirs = torch.einsum("rij,rj->ri", c2w[:, :3, :3], d_cam.to(c2w.dtype))
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        return c2w[:, :3, 3], dirs

    def image_rays(self, cam: int) -> tuple[Tensor, Tensor]:
        """Rays through every pixel centre of camera ``cam``: origins, dirs each [H, W, 3]."""
        xy = self.pixel_centers(cam)
        h, w = xy.shape[:2]
        idx = torch.full((h * w,), cam, dtype=torch.long, device=self.device)
        o, d = self.rays(idx, xy.reshape(-1, 2))
        return o.reshape(h, w, 3), d.reshape(h, w, 3)

    def project(self, cam_idx: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
        """Project world points through their cameras, distortion included.

        ``cam_idx``: [R] int64; ``points``: [R, 3]. Returns pixel coords [R, 2] and camera-space
        depth z [R] (negative z means the point is behind the camera).
        """
        c2w = self.c2w[cam_idx]
        rot, t = c2w[:, :3, :3], c2w[:, :3, 3]
        p_cam = torch.einsum("rji,rj->ri", rot, points.to(c2w.dtype) - t)  # R^T (p - t)
        z = p_cam[:, 2]
        normalised = p_cam[:, :2] / z[:, None]
        if self.distortion is not None:
            normalised = dist.distort(normalised, self.distortion[cam_idx].to(normalised))
        K = self.K[cam_idx].to(normalised)
        px = K[:, 0, 0] * normalised[:, 0] + K[:, 0, 2]
        py = K[:, 1, 1] * normalised[:, 1] + K[:, 1, 2]
        return torch.stack([px, py], dim=-1), z

    # ------------------------------------------------------------------ (de)serialisation
    def state_dict(self) -> dict[str, Tensor]:
        """Plain tensors for safetensors files (no pickling)."""
        out = {"c2w": self.c2w, "K": self.K, "width": self.width, "height": self.height}
        if self.distortion is not None:
            out["distortion"] = self.distortion
        return out

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> Cameras:
        return cls(state["c2w"], state["K"], state["width"], state["height"],
                   state.get("distortion"))


def opengl_to_opencv(c2w: Tensor) -> Tensor:
    """Convert camera-to-world matrices [N, 4, 4] from OpenGL/Blender camera axes (x right,
    y up, z backward) to OpenCV axes (x right, y down, z forward): flip the y and z columns."""
    out = c2w.clone()
    out[..., :3, 1:3] *= -1
    return out
