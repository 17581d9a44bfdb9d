"""`fieldkit export KIND RUN OUT`: one entry point over the mesh, point-cloud and splat exports.

Returns the file written and a one-line summary for the command line to print.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from fieldkit.errors import FieldkitError
from fieldkit.render.crop import CropBox

KINDS = ("mesh", "points", "splats")
METHODS = ("mc", "tsdf", "poisson")


def parse_threshold(threshold: str | float | None) -> float | None:
    """``auto`` (or None) -> None (Otsu's split); a number -> that density."""
    if threshold is None or threshold == "auto":
        return None
    try:
        return float(threshold)
    except ValueError:
        raise FieldkitError(f"--threshold must be auto or a number, not {threshold!r}") from None


def _views(views: int | None) -> dict:
    return {} if views is None else {"views": views}


def _num(num: int | None) -> dict:
    return {} if num is None else {"num": num}


def _check_out(kind: str, out: Path, spz_sh_bits: int | None) -> None:
    """A one-line error for an ``out`` that ``kind`` cannot write."""
    from fieldkit.export.mesh import MESH_SUFFIXES, check_suffix

    if kind == "mesh":
        check_suffix(out, MESH_SUFFIXES)
    elif kind == "points":
        check_suffix(out, (".ply", ".html"))
    elif out.suffix != "":
        from fieldkit.export.splats import check_spz_sh_bits, splat_format

        if splat_format(out) == ".spz":
            check_spz_sh_bits(spz_sh_bits)


def export_run(kind: str, source, out: Path, method: str | None = None, resolution: int = 256,
               views: int | None = None, threshold: str | float | None = "auto",
               target_faces: int | None = None, num: int | None = None,
               spz_sh_bits: int | None = None, crop: CropBox | None = None,
               min_opacity: float = 0.0, max_sh_degree: int | None = None,
               page=None, scene: Path | None = None, downscale: int = 1,
               ply_transform: Path | None = None) -> tuple[Path, str]:
    """Export ``kind`` (mesh, points or splats) of ``source`` to ``out``; (path, summary).

    ``source``: a run folder, or a splat file or another trainer's folder (``open_subject``:
    in the world of ``scene`` when given, whose training cameras at ``downscale`` give the
    views, and in the frame ``ply_transform`` names). mesh: marching cubes on the density
    (``method`` mc, ``resolution`` lattice points a side, ``threshold``) or TSDF fusion of
    ``views`` rendered training views (``method`` tsdf, ``resolution`` voxels a side) or
    screened Poisson on the points of ``views`` rendered training views (``method`` poisson, an
    octree of ``resolution`` cells a side, rounded to a power of two; ``num`` points, default
    300k); either decimated to ``target_faces``; ``method`` None: mc for a density field, tsdf
    for splats. points: ``num`` (default 1M) coloured points with normals, lifted from
    ``views`` rendered training views. splats: the Gaussians (.ply, .compressed.ply, .spz with
    ``spz_sh_bits``, .splat or a 3DGS output folder), leaving out the Gaussians fainter than
    ``min_opacity`` and the SH bands above ``max_sh_degree`` (``SplatFilter``). ``views``
    None: each method's default. ``crop``: only what lies in this box (a run's box
    coordinates; a splat file's own coordinates, ``Subject.take_crop``). ``page``: where a web
    page (.html) opens (a ``web_page.PageView``; default the first view)."""
    if kind not in KINDS:
        raise FieldkitError(f"cannot export {kind!r}: choose one of {', '.join(KINDS)}")
    if method is not None and method not in METHODS:
        raise FieldkitError(f"mesh method must be mc, tsdf or poisson, not {method!r}")
    from fieldkit.export.subject import open_subject
    from fieldkit.export.web_page import is_page

    _check_out(kind, Path(out), spz_sh_bits)   # before a (large) model is read
    subject = open_subject(source, scene, downscale, ply_transform)
    units = "box coordinates" if is_page(out) else "world units"
    units += "" if crop is None else ", inside the crop box"
    if kind == "points":
        from fieldkit.export.points import PointsConfig, export_points

        path, cloud = export_points(subject, out, PointsConfig(crop=crop, **_views(views),
                                                                  **_num(num)), page)
        return path, (f"points     {path}: {len(cloud.points):,} points with colours and "
                      f"normals, {units}")
    if kind == "splats":
        from fieldkit.export.splats import FORMATS, SplatFilter, export_splats, splat_format

        path, n = export_splats(subject, out, spz_sh_bits=spz_sh_bits, crop=crop,
                                keep=SplatFilter(min_opacity, max_sh_degree), page=page)
        folder = Path(out).suffix == ""
        cams = " (+ cameras.json: 3DGS output folder)" if folder else ""
        layout = FORMATS[".ply" if folder else splat_format(Path(out))]
        size = path.stat().st_size / 2 ** 20
        return path, (f"splats     {path}: {n:,} Gaussians, {layout}, {units}, "
                      f"{size:.1f} MiB{cams}")
    if method is None:
        method = "tsdf" if getattr(subject.model, "kind", None) == "splat" else "mc"
    if method == "poisson":
        import math

        from fieldkit.export.poisson import PoissonConfig, export_mesh_poisson

        points = replace(PoissonConfig().points, **_views(views), **_num(num))
        path, mesh = export_mesh_poisson(subject, out, PoissonConfig(
            depth=round(math.log2(max(resolution, 2))), points=points,
            target_faces=target_faces, crop=crop), page)
        how = " (screened Poisson)"
    elif method == "tsdf":
        from fieldkit.export.tsdf import TsdfConfig, export_mesh_tsdf

        path, mesh = export_mesh_tsdf(subject, out, TsdfConfig(
            resolution=resolution, target_faces=target_faces, crop=crop, **_views(views)), page)
        how = " (TSDF fusion)"
    else:
        from fieldkit.export.mesh import MeshConfig, export_mesh

        path, mesh = export_mesh(subject, out, MeshConfig(
            resolution=resolution, threshold=parse_threshold(threshold),
            target_faces=target_faces, crop=crop), page)
        how = ""
    return path, (f"mesh       {path}: {len(mesh.vertices):,} vertices, "
                  f"{len(mesh.triangles):,} faces{how}, {units}")
