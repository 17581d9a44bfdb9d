"""`fieldkit export mesh --method tsdf`: fuse rendered depth and colour into a mesh (any model).

Views spread over the training cameras are rendered; each depth map (distance along the ray,
box units) becomes camera z in world units and is fused, with its colours, into open3d's
sparse ``VoxelBlockGrid``; pixels whose opacity is below ``min_alpha`` are left out (depth 0).
Marching cubes on the fused volume gives the mesh, cleaned like the density export. It needs
only ``render``, so it meshes splats as well as density fields, and it works in the scene's
world units throughout.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fieldkit.data.cameras import Cameras
from fieldkit.data.normalize import Normalisation
from fieldkit.errors import FieldkitError
from fieldkit.export.mesh import _clean, require_open3d
from fieldkit.progress import progress_iter
from fieldkit.render.crop import CropBox


@dataclass
class TsdfConfig:
    """How rendered depth maps become a mesh."""

    resolution: int = 256
    """Voxels along the region of interest's side ([-1, 1]^3 in box units)."""
    views: int = 100
    """Training views fused (evenly spaced over the training split)."""
    trunc_voxels: float = 4.0
    """Truncation distance of the signed distance, in voxels."""
    min_alpha: float = 0.5
    """Pixels rendered with lower opacity carry no depth."""
    min_weight: float = 2.0
    """Voxels seen by fewer views than this are left out of the surface."""
    target_faces: int | None = None
    """Decimate to about this many faces (None: keep all)."""
    min_component: float = 0.002
    """Drop connected pieces with fewer faces than this fraction of the largest piece."""
    crop: CropBox | None = None
    """Fuse only what lies in this box (box coordinates): the model is cropped before it is
    rendered."""


def camera_to_world(c2w_box: torch.Tensor, norm: Normalisation) -> np.ndarray:
    """[4, 4] OpenCV camera-to-world in world units from one in box units."""
    inv = norm.inverse_matrix()  # box -> world: rotation.T / scale, then + center
    out = np.eye(4)
    out[:3, :3] = norm.rotation.T @ c2w_box[:3, :3].double().numpy()
    out[:3, 3] = inv[:3, :3] @ c2w_box[:3, 3].double().numpy() + inv[:3, 3]
    return out


@torch.no_grad()
def extract_mesh_tsdf(model, cameras: Cameras, config: TsdfConfig, norm: Normalisation):
    """A cleaned, coloured open3d TriangleMesh in world units, fused from renders at (up to
    ``config.views`` of) the training ``cameras``."""
    o3d = require_open3d()
    if config.resolution < 16 or config.views < 1:
        raise FieldkitError("--resolution must be at least 16 and --views at least 1")
    model.eval()
    voxel = 2.0 / norm.scale / config.resolution  # world units
    o3c = o3d.core
    # open3d's sparse voxel-block grid (the legacy ScalableTSDFVolume of open3d 0.20 extracts
    # nothing here); the hash map of blocks grows as views reveal more surface.
    grid = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight", "color"),
        attr_dtypes=(o3c.float32, o3c.float32, o3c.float32), attr_channels=((1), (1), (3)),
        voxel_size=voxel, block_resolution=8, block_count=20000)
    views = list(range(0, len(cameras), max(1, len(cameras) // config.views)))[:config.views]
    bg = torch.ones(3)
    fused = 0
    for i in progress_iter(views, total=len(views), desc="fusing views"):
        cam = cameras[i]
        out = model.render(cam, bg)
        _, dirs = cam.image_rays(0)                                   # [H, W, 3] unit, box
        z = out["depth"][..., 0] * (dirs @ cam.c2w[0, :3, 2])          # camera z, box units
        z = torch.where(out["alpha"][..., 0] >= config.min_alpha, z / norm.scale, 0.0)
        if not bool((z > 0).any()):
            continue
        depth = o3d.t.geometry.Image(np.ascontiguousarray(z.float().numpy()))
        color = o3d.t.geometry.Image(np.ascontiguousarray(out["rgb"].clamp(0, 1).numpy()))
        K = cam.K[0].double().numpy().copy()
        K[:2, 2] -= 0.5  # open3d puts pixel centres at integer coordinates
        K = o3c.Tensor(K)
        extrinsic = o3c.Tensor(np.linalg.inv(camera_to_world(cam.c2w[0], norm)))
        far = float(z.max()) * 1.01
        blocks = grid.compute_unique_block_coordinates(depth, K, extrinsic, 1.0, far,
                                                       config.trunc_voxels)
        grid.integrate(blocks, depth, color, K, extrinsic, 1.0, far, config.trunc_voxels)
        fused += 1
    if not fused:
        raise FieldkitError(f"no rendered pixel reached opacity {config.min_alpha}; train "
                            "longer")
    mesh = grid.extract_triangle_mesh(weight_threshold=config.min_weight).to_legacy()
    if not len(mesh.triangles):
        raise FieldkitError("the fused volume has no surface; train longer or raise "
                            "--resolution")
    mesh = _clean(mesh, config.min_component, config.target_faces)
    mesh.compute_vertex_normals()
    return mesh


def export_mesh_tsdf(source, out, config: TsdfConfig, page=None):
    """TSDF mesh of a run or a splat file (``source``: its path or an export ``Subject``) in
    world units written to ``out``; returns (path, mesh)."""
    from fieldkit.export.mesh import MESH_SUFFIXES, check_suffix, write_mesh
    from fieldkit.export.subject import cropped, open_subject

    check_suffix(out, MESH_SUFFIXES)  # before the (long) fusion
    subject = open_subject(source)
    config = cropped(subject, config)
    mesh = extract_mesh_tsdf(subject.model, subject.cameras, config, subject.normalisation)
    return write_mesh(mesh, out, subject, page), mesh
