"""`fieldkit export mesh --method poisson`: screened Poisson reconstruction of the point cloud.

The points of ``fieldkit export points`` (rendered training views lifted along their rays, with
colours and normals turned towards the camera that saw them) go through open3d's screened
Poisson reconstruction (``TriangleMesh.create_from_point_cloud_poisson``), as nerfstudio's
``ns-export poisson`` does. Poisson closes the surface everywhere, also where no view saw it;
the vertices it places with little support (the lowest ``density_quantile`` of its per-vertex
density) and those outside the points' bounding box are removed, then the mesh is cleaned like
the others. It needs only ``render``, so it meshes every model, splats included, and works in
the scene's world units throughout.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from fieldkit.data.cameras import Cameras
from fieldkit.data.normalize import Normalisation
from fieldkit.errors import FieldkitError
from fieldkit.export.mesh import _clean, require_open3d
from fieldkit.export.points import PointsConfig, extract_points
from fieldkit.render.crop import CropBox


@dataclass
class PoissonConfig:
    """How the point cloud becomes a mesh."""

    depth: int = 9
    """Octree depth of the reconstruction: a 2^depth grid over the points' extent (9: 512)."""
    points: PointsConfig = field(default_factory=lambda: PointsConfig(num=300_000, views=64))
    """The point cloud reconstructed (its views, density, outlier removal)."""
    density_quantile: float = 0.02
    """Remove the vertices whose Poisson density (how many points support them) is in this
    lowest share: the surface Poisson invents where no view saw anything."""
    target_faces: int | None = None
    """Decimate to about this many faces (None: keep all)."""
    min_component: float = 0.002
    """Drop connected pieces with fewer faces than this fraction of the largest piece."""
    crop: CropBox | None = None
    """Mesh only what lies in this box (box coordinates): the model is cropped first."""


def extract_mesh_poisson(model, cameras: Cameras, config: PoissonConfig, norm: Normalisation):
    """A cleaned, coloured open3d TriangleMesh in world units, reconstructed from the points
    lifted from renders at the training ``cameras``."""
    o3d = require_open3d()
    if not 5 <= config.depth <= 12:
        raise FieldkitError(f"--resolution must give an octree depth of 5 to 12 (32 to 4096 "
                            f"cells a side), not depth {config.depth}")
    cloud = extract_points(model, cameras, replace(config.points, crop=config.crop), norm)
    if len(cloud.points) < 100:
        raise FieldkitError(f"only {len(cloud.points)} points were lifted from the renders; "
                            "train longer or use --method mc")
    mesh, density = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(
        cloud, depth=config.depth, linear_fit=False)
    density = np.asarray(density)
    low = density < np.quantile(density, config.density_quantile)
    box = cloud.get_axis_aligned_bounding_box()
    outside = np.ones(len(density), bool)
    outside[box.get_point_indices_within_bounding_box(mesh.vertices)] = False
    mesh.remove_vertices_by_mask(low | outside)
    if not len(mesh.triangles):
        raise FieldkitError("the Poisson surface is empty; train longer or use --method mc")
    mesh = _clean(mesh, config.min_component, config.target_faces)
    mesh.compute_vertex_normals()
    return mesh


def export_mesh_poisson(source, out, config: PoissonConfig, page=None):
    """Poisson mesh of a run or a splat file (``source``: its path or an export ``Subject``) in
    world units written to ``out``; returns (path, mesh)."""
    from fieldkit.export.mesh import MESH_SUFFIXES, check_suffix, write_mesh
    from fieldkit.export.subject import cropped, open_subject

    check_suffix(out, MESH_SUFFIXES)  # before the (long) reconstruction
    subject = open_subject(source)
    config = cropped(subject, config)
    mesh = extract_mesh_poisson(subject.model, subject.cameras, config, subject.normalisation)
    return write_mesh(mesh, out, subject, page), mesh
