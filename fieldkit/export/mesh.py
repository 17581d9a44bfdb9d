"""`fieldkit export mesh`: marching cubes on a density field, clean-up, vertex colours, world units.

The density is sampled on a ``resolution^3`` lattice over the model's box, but only where the
occupancy grid (dilated by one cell) says something is: elsewhere it is zero. open3d extracts the
isosurface (``TriangleMesh.create_isosurfaces``) and cleans it (degenerate / duplicate faces,
small disconnected components, quadric decimation). Vertex colours are the model's colour
seen along the inward normal from just inside the surface. Vertices are returned to the scene's
original world units and axes with the run's normalisation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fieldkit.data.normalize import Normalisation
from fieldkit.errors import FieldkitError
from fieldkit.export.web_page import PageView, is_page, mesh_page
from fieldkit.progress import progress_iter
from fieldkit.render.crop import CropBox

MESH_SUFFIXES = (".ply", ".obj", ".glb", ".html")
"""Mesh files `export mesh` writes (.html: a self-contained web page, ``web_page.py``)."""


@dataclass
class MeshConfig:
    """How a density field becomes a triangle mesh."""

    resolution: int = 256
    """Lattice points per side of the box for marching cubes."""
    threshold: float | None = None
    """Density of the isosurface; None: automatic (Otsu's split of the log-density histogram)."""
    target_faces: int | None = None
    """Decimate to about this many faces with quadric simplification (None: keep all)."""
    min_component: float = 0.002
    """Drop connected pieces with fewer faces than this fraction of the largest piece."""
    chunk: int = 1 << 18
    """Points per density query."""
    crop: CropBox | None = None
    """Mesh only what lies in this box (box coordinates): the lattice covers the box alone,
    at the spacing ``resolution`` points give its longest side, and surfaces it cuts are
    closed along its faces."""


def check_suffix(out: Path, suffixes: tuple[str, ...]) -> Path:
    """``out`` as a Path, or a one-line error when its suffix is not one of ``suffixes``."""
    out = Path(out)
    if out.suffix.lower() not in suffixes:
        raise FieldkitError(f"--out must end in {', '.join(suffixes)}, not {out.name!r}")
    return out


def require_open3d():
    try:
        import open3d as o3d
    except ImportError:
        raise FieldkitError("mesh export needs open3d; install it with "
                            "`pip install open3d`") from None
    return o3d


def auto_threshold(volume: np.ndarray) -> float:
    """Otsu's threshold on log10(density + 0.01) of the lattice points with density > 0: the
    split that best separates the empty-space mode from the solid mode (2.6 on the demo scene,
    near instant-ngp's fixed 2.5)."""
    x = np.log10(volume[volume > 0].astype(np.float64) + 1e-2)
    if x.size < 2 or x.min() == x.max():
        return float(volume.max()) * 0.5
    hist, edges = np.histogram(x, 256)
    mids = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * mids)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))   # a plateau across a gap:
    k = int(best[len(best) // 2])                                   # take its middle
    return float(10 ** mids[k] - 1e-2)


def lattice(bound: float, resolution: int, crop: CropBox | None = None) -> list[Tensor]:
    """The three axes [n_x], [n_y], [n_z] of the marching-cubes lattice (box units):
    ``resolution`` points a side over [-bound, bound]^3, or, with a crop box, over its overlap
    with the box at the spacing ``resolution`` points give its longest side, one spacing wider
    on every side the crop cuts (the density there is zero, so cut surfaces close)."""
    if crop is None:
        return [torch.linspace(-bound, bound, resolution)] * 3
    region = crop.clip(bound)
    if region is None:
        raise FieldkitError(f"--crop lies outside the scene's box, [-{bound:g}, {bound:g}] on "
                            "every axis; give box coordinates")
    lo, hi = region
    step = max(b - a for a, b in zip(lo, hi)) / (resolution - 1)
    axes = []
    for a, b in zip(lo, hi):
        a, b = (a - step if a > -bound else a), (b + step if b < bound else b)
        n = max(2, round((b - a) / step) + 1)
        axes.append(torch.linspace(a, b, n))
    return axes


@torch.no_grad()
def sample_density(model, axes: list[Tensor], chunk: int = 1 << 18) -> np.ndarray:
    """Density at the lattice ``axes`` ([n_x], [n_y], [n_z], box units): [n_x, n_y, n_z]
    float32. Points outside the dilated occupancy grid get zero."""
    b = float(model.config.render.bound)
    occ = model.grid.level_binaries[-1].float()[None, None]       # [1, 1, G, G, G] whole box
    occ = torch.nn.functional.max_pool3d(occ, 3, stride=1, padding=1)[0, 0] > 0
    g = occ.shape[0]
    cx, cy, cz = [((a + b) / (2 * b) * g).long().clamp_(0, g - 1) for a in axes]  # grid cells
    mask = occ[cx][:, cy][:, :, cz]                                # [nx, ny, nz]
    idx = torch.nonzero(mask)                                      # [M, 3]
    nx, ny, nz = (len(a) for a in axes)
    density = torch.zeros(nx * ny * nz)
    flat = (idx[:, 0] * ny + idx[:, 1]) * nz + idx[:, 2]
    starts = range(0, len(idx), chunk)
    for s in progress_iter(starts, total=len(starts), desc="density"):
        i = idx[s:s + chunk]
        pts = torch.stack([axes[0][i[:, 0]], axes[1][i[:, 1]], axes[2][i[:, 2]]], -1)  # [n, 3]
        density[flat[s:s + chunk]] = model.density(pts).float()
    return density.reshape(nx, ny, nz).numpy()


def _isosurface(volume: np.ndarray, level: float, axes: list[Tensor]):
    """Legacy open3d TriangleMesh of {volume == level}; ``volume`` [x, y, z] sampled at
    ``axes``; vertices in box units (open3d puts voxel [k, j, i] at (i, j, k), hence the
    transpose)."""
    o3d = require_open3d()
    t = o3d.core.Tensor(np.ascontiguousarray(volume.transpose(2, 1, 0), dtype=np.float32))
    mesh = o3d.t.geometry.TriangleMesh.create_isosurfaces(t, [float(level)])
    legacy = mesh.to_legacy()
    v = np.asarray(legacy.vertices)
    origin = np.array([float(a[0]) for a in axes])
    spacing = np.array([float(a[1] - a[0]) for a in axes])
    legacy.vertices = o3d.utility.Vector3dVector(origin + v * spacing)
    return legacy


def _clean(mesh, min_component: float, target_faces: int | None):
    mesh.remove_degenerate_triangles()
    mesh.remove_duplicated_triangles()
    mesh.remove_duplicated_vertices()
    mesh.remove_non_manifold_edges()
    if len(mesh.triangles):
        labels, counts, _ = mesh.cluster_connected_triangles()
        labels, counts = np.asarray(labels), np.asarray(counts)
        small = counts < min_component * counts.max()
        mesh.remove_triangles_by_mask(small[labels])
    mesh.remove_unreferenced_vertices()
    if target_faces and len(mesh.triangles) > target_faces:
        mesh = mesh.simplify_quadric_decimation(int(target_faces))
        mesh.remove_degenerate_triangles()
        mesh.remove_unreferenced_vertices()
    return mesh


@torch.no_grad()
def _orient_outward(mesh, model) -> None:
    """Flip the winding if normals point up the density gradient (into the object)."""
    mesh.compute_vertex_normals()
    v = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32)
    n = torch.as_tensor(np.asarray(mesh.vertex_normals), dtype=torch.float32)
    pick = torch.randperm(len(v))[:4096]
    eps = model.config.render.step_size
    outside = model.density(v[pick] + eps * n[pick])
    inside = model.density(v[pick] - eps * n[pick])
    if (outside > inside).float().mean() > 0.5:
        tri = np.asarray(mesh.triangles)
        mesh.triangles = type(mesh.triangles)(np.ascontiguousarray(tri[:, ::-1]))
        mesh.compute_vertex_normals()


@torch.no_grad()
def _vertex_colors(mesh, model, chunk: int) -> np.ndarray:
    """[V, 3] colour seen looking along the inward normal, from one step inside the surface."""
    v = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32)
    n = torch.as_tensor(np.asarray(mesh.vertex_normals), dtype=torch.float32)
    n = torch.nn.functional.normalize(n, dim=-1)
    eps = model.config.render.step_size
    out = []
    for s in range(0, len(v), chunk):
        rgb, _ = model.field(v[s:s + chunk] - eps * n[s:s + chunk], -n[s:s + chunk])
        out.append(rgb)
    return torch.cat(out).clamp(0, 1).double().numpy() if out else np.zeros((0, 3))


def extract_mesh(model, config: MeshConfig, normalisation: Normalisation | None = None):
    """A cleaned, coloured, outward-facing open3d TriangleMesh (world units if given the
    normalisation, else box units)."""
    if not hasattr(model, "grid") or not hasattr(model.config, "render"):
        raise FieldkitError(f"marching cubes needs a density field; a {model.kind} model "
                            "can be meshed with --method tsdf")
    if config.resolution < 16:
        raise FieldkitError(f"--resolution must be at least 16, not {config.resolution}")
    o3d = require_open3d()
    model.eval()
    axes = lattice(float(model.config.render.bound), config.resolution, config.crop)
    volume = sample_density(model, axes, config.chunk)
    level = config.threshold if config.threshold is not None else auto_threshold(volume)
    if not (volume.max() > level):
        raise FieldkitError(f"no density reaches the threshold {level:.3g} (max "
                            f"{volume.max():.3g}); train longer or pass a lower --threshold")
    mesh = _clean(_isosurface(volume, level, axes), config.min_component,
                  config.target_faces)
    _orient_outward(mesh, model)
    mesh.vertex_colors = o3d.utility.Vector3dVector(_vertex_colors(mesh, model, config.chunk))
    if normalisation is not None:
        v = torch.as_tensor(np.asarray(mesh.vertices))
        mesh.vertices = o3d.utility.Vector3dVector(normalisation.to_world(v).numpy())
        mesh.compute_vertex_normals()
    return mesh


def to_trimesh(mesh, vertices: np.ndarray | None = None):
    """An open3d TriangleMesh as a trimesh.Trimesh (normals, 8-bit vertex colours); given
    ``vertices`` [V, 3] (the mesh moved to another frame), those, without the normals, which
    trimesh then recomputes."""
    import trimesh

    colors = (np.asarray(mesh.vertex_colors) * 255).round().astype(np.uint8)
    normals = np.asarray(mesh.vertex_normals) if vertices is None else None
    return trimesh.Trimesh(np.asarray(mesh.vertices) if vertices is None else vertices,
                           np.asarray(mesh.triangles), vertex_normals=normals,
                           vertex_colors=colors if len(colors) else None, process=False)


def write_mesh(mesh, out: Path, subject=None, page: PageView | None = None) -> Path:
    """Write .ply (binary), .obj, .glb or a web page (.html, opening at ``page``, default
    the first view of ``subject``, an export's ``Subject``); raises a one-line error for other
    suffixes."""
    out = check_suffix(out, MESH_SUFFIXES)
    if is_page(out):
        if subject is None and page is None:
            raise FieldkitError("a web page of a mesh needs its run (for the first view)")
        return mesh_page(out, mesh, page or PageView.of_subject(subject),
                         subject.label if subject is not None else out.stem)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    if out.suffix.lower() == ".glb":
        # open3d's own .glb cannot be read back by its importer (buffer views out of range);
        # trimesh writes glTF that open3d, trimesh and Blender read.
        to_trimesh(mesh).export(str(tmp))
    elif not require_open3d().io.write_triangle_mesh(str(tmp), mesh, write_ascii=False,
                                           write_vertex_normals=True, write_vertex_colors=True):
        raise FieldkitError(f"could not write {out}; check the folder is writable")
    tmp.replace(out)
    return out


def export_mesh(source, out: Path, config: MeshConfig, page: PageView | None = None):
    """Mesh of a run's model (``source``: a run folder or an export ``Subject``) in world
    units, written to ``out`` (a web page opens at ``page``, default the run's first view);
    returns (path, mesh)."""
    from fieldkit.export.subject import cropped, open_subject

    check_suffix(out, MESH_SUFFIXES)   # before the (long) extraction
    subject = open_subject(source)
    config = cropped(subject, config)
    mesh = extract_mesh(subject.model, config, subject.normalisation)
    return write_mesh(mesh, out, subject, page), mesh
