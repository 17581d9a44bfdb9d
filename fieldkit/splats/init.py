"""Where Gaussians start when a scene has no sparse points (Blender, instant-ngp captures).

3DGS starts from COLMAP's points. Without them, gsplat and nerfstudio draw random points in a
cube around the scene with random colours. ``frustum_points`` draws them where the photos can
see them instead: each one on the ray of a random pixel of a random training photo, at a random
depth inside the scene box, with that pixel's colour. A point on the wrong depth of its ray
fades under the other views and is pruned; one on the right depth starts with the right colour.
In an unbounded capture (a box larger than the region of interest) the background the views
show lies outside [-1, 1]^3, where random points in the region of interest never reach.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from fieldkit.render.volume import ray_aabb

MIN_ALPHA = 128
"""Pixels with an alpha (uint8) below this are background: no point is drawn on their ray."""
NEAR_FRACTION = 0.1
"""Points are no closer to their camera than this share of its distance to the box centre."""


def frustum_points(scene, n: int, bound: float, generator: torch.Generator | None = None
                   ) -> tuple[Tensor, Tensor]:
    """``n`` points [n, 3] (box units) on rays of random pixels of the training photos, uniform
    in depth over the part of each ray inside the box [-bound, bound]^3 and at least
    NEAR_FRACTION of its camera's distance to the centre away, with the pixels' colours
    [n, 3] in [0, 1]. Pixels that are transparent (alpha < MIN_ALPHA) or whose ray misses the
    box are skipped (fewer than ``n`` points only if nearly all of them are)."""
    cams = scene.cameras
    train = scene.split("train")
    points, colors, have, rate = [], [], 0, 0.5
    for _ in range(8):  # redraw what was skipped, as many more as were kept last time
        m = math.ceil(1.2 * (n - have) / rate)
        idx = train[torch.randint(len(train), (m,), generator=generator)]
        w, h = cams.width[idx].float(), cams.height[idx].float()
        xy = (torch.rand(m, 2, generator=generator) * torch.stack([w, h], -1)).floor()
        xy = torch.minimum(xy, torch.stack([w, h], -1) - 1)
        rgba = scene.lookup(idx, xy.long())
        o, d = cams.rays(idx, xy + 0.5)
        near, far = ray_aabb(o, d, torch.tensor([-bound] * 3 + [bound] * 3))
        near = torch.maximum(near, NEAR_FRACTION * o.norm(dim=-1))
        keep = far > near
        if scene.has_alpha:
            keep &= rgba[:, 3] >= MIN_ALPHA
        o, d, near, far, rgba = o[keep], d[keep], near[keep], far[keep], rgba[keep]
        t = near + (far - near) * torch.rand(len(o), generator=generator)
        points.append(o + d * t[:, None])
        colors.append(rgba[:, :3].float() / 255)
        have += len(o)
        rate = max(len(o) / m, 0.01)
        if have >= n:
            break
    return torch.cat(points)[:n].float(), torch.cat(colors)[:n]
