"""Splat students: Gaussians started at the teacher's surface, then trained on its renders.

The teacher renders whole novel views (``render_scene``); every pixel it sees as opaque is
lifted to 3D along its ray at the teacher's depth, with the teacher's colour. A random subset of
``init_points`` of those points become the first Gaussians (scales from their nearest
neighbours). ``SplatTrainer`` then optimises them on the teacher's views exactly as it would on
photos (L1 + SSIM over random backgrounds, densification), and evaluates on the held-out views.
"""
from __future__ import annotations

import torch

from fieldkit.data.cameras import Cameras
from fieldkit.distill.targets import TeacherViews

MIN_ALPHA = 0.5
"""Pixels at least this opaque in the teacher's render seed a Gaussian."""


def surface_points(views: TeacherViews) -> tuple[torch.Tensor, torch.Tensor]:
    """(points [P, 3] box units, colours [P, 3] in [0, 1]) lifted from the teacher's training
    views."""
    scene = views.scene
    pts, cols = [], []
    for i in scene.split("train").tolist():
        rgba = scene.image(i).float() / 255
        keep = rgba[..., 3] >= MIN_ALPHA  # [H, W]
        if not bool(keep.any()):
            continue
        o, d = scene.cameras.image_rays(i)
        pts.append(o[keep] + d[keep] * views.depth[i][keep])
        cols.append(rgba[..., :3][keep])
    if not pts:
        return torch.zeros(0, 3), torch.zeros(0, 3)
    return torch.cat(pts), torch.cat(cols)


def initial_count(init_points: int, points_per_pixel: float, views: TeacherViews) -> int:
    """How many Gaussians a splat student starts from: ``init_points``, and at most
    ``points_per_pixel`` times the pixels of one target view (0: no such limit)."""
    if points_per_pixel <= 0:
        return init_points
    cams = views.scene.cameras
    pixels = int(cams.width[0]) * int(cams.height[0])
    return min(init_points, max(1, round(points_per_pixel * pixels)))


def init_splats_from_views(student, views: TeacherViews, train_cameras: Cameras,
                           seed: int = 0, points_per_pixel: float = 0.0) -> int:
    """Initialise ``student`` (a ``SplatModel``) from the teacher's surface with
    ``initial_count`` Gaussians; returns their number. Falls back to random Gaussians when the
    teacher renders nothing opaque."""
    g = torch.Generator().manual_seed(seed)
    points, colors = surface_points(views)
    n = initial_count(student.config.init_points, points_per_pixel, views)
    if len(points) > n:
        keep = torch.randperm(len(points), generator=g)[:n]
        points, colors = points[keep], colors[keep]
    centers = train_cameras.positions
    extent = 1.1 * float((centers - centers.mean(0)).norm(dim=-1).max())
    student.initialize(points if len(points) else None, colors if len(points) else None,
                       extent, g)
    return student.num_gaussians
