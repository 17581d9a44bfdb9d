"""`fieldkit export points`: a coloured point cloud with normals from rendered depth.

Views spread over the training cameras are rendered; pixels whose opacity is high are lifted to
3D along their rays (``origin + depth * dir``, box units), then returned to world units. open3d
estimates normals (turned towards the camera that saw each point) and removes statistical
outliers; a random subset of ``num`` points is kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fieldkit.data.cameras import Cameras
from fieldkit.data.normalize import Normalisation
from fieldkit.errors import FieldkitError
from fieldkit.export.mesh import check_suffix, require_open3d
from fieldkit.progress import progress_iter
from fieldkit.render.crop import CropBox


@dataclass
class PointsConfig:
    """How rendered depth becomes a point cloud."""

    num: int = 1_000_000
    """Points kept (a random subset when more are found)."""
    views: int = 32
    """Training views rendered (evenly spaced over the training split)."""
    min_alpha: float = 0.9
    """Keep pixels whose rendered opacity is at least this."""
    outlier_neighbors: int = 20
    """Neighbours in the statistical outlier test."""
    outlier_std: float = 2.0
    """Drop points whose mean neighbour distance exceeds the mean by this many std devs."""
    seed: int = 0
    """Seed of the random subset."""
    crop: CropBox | None = None
    """Keep only what lies in this box (box coordinates): the model is cropped before it is
    rendered, and lifted points outside the box are dropped."""


@torch.no_grad()
def lift_views(model, cameras: Cameras, views: list[int], min_alpha: float,
               background: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points [P, 3], colours [P, 3], camera centres [P, 3]) in box units, from the renders of
    ``cameras[views]``."""
    pts, cols, eyes = [], [], []
    for i in progress_iter(views, total=len(views), desc="rendering views"):
        cam = cameras[i]
        out = model.render(cam, background)
        o, d = cam.image_rays(0)
        keep = out["alpha"][..., 0] >= min_alpha                     # [H, W]
        p = o[keep] + d[keep] * out["depth"][keep]                    # [n, 3]
        pts.append(p)
        cols.append(out["rgb"][keep])
        eyes.append(cam.c2w[0, :3, 3].expand_as(p))
    if not pts:
        return np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3))
    return tuple(torch.cat(x).double().numpy() for x in (pts, cols, eyes))


def extract_points(model, cameras: Cameras, config: PointsConfig,
                   normalisation: Normalisation):
    """open3d PointCloud (world units) with colours and outward normals, lifted from renders
    at (up to ``config.views`` of) the training ``cameras``."""
    o3d = require_open3d()
    if config.num < 1 or config.views < 1:
        raise FieldkitError("--num and --views must be at least 1")
    model.eval()
    views = list(range(0, len(cameras), max(1, len(cameras) // config.views)))[:config.views]
    bg = torch.ones(3)
    p, c, eye = lift_views(model, cameras, views, config.min_alpha, bg)
    if config.crop is not None:
        keep = config.crop.inside(torch.as_tensor(p)).numpy()
        p, c, eye = p[keep], c[keep], eye[keep]
    if len(p) == 0:
        raise FieldkitError(f"no pixel reached opacity {config.min_alpha}; train longer or "
                            "lower --min-alpha")
    to_world = lambda x: normalisation.to_world(torch.as_tensor(x)).numpy()  # noqa: E731
    pw, eye_w = to_world(p), to_world(eye)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pw))
    cloud.colors = o3d.utility.Vector3dVector(np.clip(c, 0, 1))
    cloud, kept = cloud.remove_statistical_outlier(config.outlier_neighbors, config.outlier_std)
    eye_w = eye_w[np.asarray(kept)]
    if len(cloud.points) > config.num:
        pick = np.sort(np.random.default_rng(config.seed).choice(len(cloud.points), config.num,
                                                                   replace=False))
        cloud, eye_w = cloud.select_by_index(pick.tolist()), eye_w[pick]
    spacing = float(np.median(np.asarray(cloud.compute_nearest_neighbor_distance())))
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=6 * spacing, max_nn=30))
    n = np.asarray(cloud.normals)
    flip = ((eye_w - np.asarray(cloud.points)) * n).sum(-1) < 0    # face the camera that saw it
    n[flip] *= -1
    cloud.normals = o3d.utility.Vector3dVector(n)
    return cloud


def export_points(source, out: Path, config: PointsConfig, page=None):
    """Point cloud of a run or a splat file (``source``: its path or an export ``Subject``) in
    world units written to ``out`` (.ply, or .html: a web page opening at ``page``, default its
    first view); returns (path, cloud)."""
    from fieldkit.export.subject import cropped, open_subject
    from fieldkit.export.web_page import PageView, is_page, points_page

    out = check_suffix(out, (".ply", ".html"))
    subject = open_subject(source)
    config = cropped(subject, config)
    cloud = extract_points(subject.model, subject.cameras, config, subject.normalisation)
    if is_page(out):
        return points_page(out, cloud, page or PageView.of_subject(subject), subject.label), cloud
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.ply")
    if not require_open3d().io.write_point_cloud(str(tmp), cloud, write_ascii=False):
        raise FieldkitError(f"could not write {out}; check the folder is writable")
    tmp.replace(out)
    return out, cloud
