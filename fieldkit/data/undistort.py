"""Resample a scene's distorted photos into ideal pinhole images (same size and intrinsics).

Rasterizers (Gaussian splats) project through pinholes only. Rather than train on photos whose
pixels sit elsewhere than the pinhole model says, a splat run trains and is evaluated on
undistorted copies: every pinhole pixel looks up where its ray lands in the distorted photo
(bilinear; pixels whose source falls outside the photo repeat the nearest edge).
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from fieldkit.data import distortion as dist
from fieldkit.data.cameras import Cameras
from fieldkit.data.scene import Scene
from fieldkit.progress import progress_iter


def undistort_scene(scene: Scene) -> Scene:
    """``scene`` with pinhole images and cameras (returned unchanged when nothing is distorted)."""
    cams = scene.cameras
    if cams.distortion is None:
        return scene
    pixels = scene.pixels.clone()
    for i in progress_iter(range(len(scene)), total=len(scene), desc="undistorting images"):
        h, w = int(cams.height[i]), int(cams.width[i])
        K = cams.K[i]
        xy = cams.pixel_centers(i).reshape(-1, 2)
        norm = torch.stack([(xy[:, 0] - K[0, 2]) / K[0, 0], (xy[:, 1] - K[1, 2]) / K[1, 1]], -1)
        src = dist.distort(norm, cams.distortion[i].expand(len(norm), -1))
        sx, sy = src[:, 0] * K[0, 0] + K[0, 2], src[:, 1] * K[1, 1] + K[1, 2]
        grid = torch.stack([sx / w * 2 - 1, sy / h * 2 - 1], -1).reshape(1, h, w, 2)
        image = scene.image(i).permute(2, 0, 1)[None].float()
        out = F.grid_sample(image, grid, mode="bilinear", padding_mode="border",
                            align_corners=False)
        pixels[scene.offsets[i]:scene.offsets[i + 1]] = \
            out[0].permute(1, 2, 0).reshape(h * w, -1).round().clamp(0, 255).to(torch.uint8)
    pinhole = Cameras(cams.c2w, cams.K, cams.width, cams.height, None)
    return replace(scene, cameras=pinhole, pixels=pixels)
