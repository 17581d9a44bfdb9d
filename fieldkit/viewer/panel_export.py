"""GUI panel "Export": mesh, point cloud and splat file (or a web page of any of them), written
by the library functions the CLI uses, with progress, then offered for download. Files go to
RUN/viewer/exports/."""
from __future__ import annotations

from fieldkit.export.mesh import MESH_SUFFIXES
from fieldkit.export.splats import FORMATS
from fieldkit.export.web_page import PAGE_SUFFIX
from fieldkit.viewer.jobs import (export_mesh_job, export_points_job, export_splats_job,
                                  run_job)


def build_export_panel(session) -> None:
    viewer, gui, h = session.viewer, session.client.gui, session.handles
    src = viewer.sources[0]
    has_run = src.run_dir is not None or src.ply_path is not None   # or a splat file
    with gui.add_folder("Export", expand_by_default=False):
        if len(viewer.sources) == 2:
            gui.add_markdown(f"exports the left model, **{src.label}**")
        methods = ("tsdf", "poisson") if src.is_splat else ("mc", "tsdf", "poisson")
        h["mesh_method"] = gui.add_dropdown(
            "mesh method", methods, initial_value=methods[0], visible=has_run,
            hint="mc: marching cubes on the density; tsdf: fused rendered depth; poisson: "
                 "screened Poisson on the rendered points")
        h["mesh_res"] = gui.add_number("mesh resolution", 256, min=32, max=1024, step=32,
                                       visible=has_run,
                                       hint="lattice points (mc), voxels (tsdf) or octree "
                                            "cells (poisson) a side")
        h["mesh_file"] = gui.add_dropdown(
            "mesh file", MESH_SUFFIXES, initial_value=".ply", visible=has_run,
            hint=".html: a web page that opens offline in any browser")
        h["export_mesh"] = gui.add_button("export mesh", visible=has_run)
        h["points_num"] = gui.add_number("points", 1_000_000, min=1000, max=50_000_000,
                                         step=1000, visible=has_run)
        h["points_file"] = gui.add_dropdown(
            "points file", (".ply", PAGE_SUFFIX), initial_value=".ply", visible=has_run,
            hint=".html: a web page that opens offline in any browser")
        h["export_points"] = gui.add_button("export points", visible=has_run)
        h["splat_file"] = gui.add_dropdown(
            "splat file", tuple(FORMATS), initial_value=".ply", visible=src.is_splat,
            hint=".ply: any 3DGS tool; .spz: about a tenth of it, for web viewers; "
                 ".compressed.ply: SuperSplat; .splat: base colours only; .html: a web page "
                 "that opens offline in any browser")
        h["splat_min_opacity"] = gui.add_number(
            "min opacity", 0.0, min=0.0, max=0.99, step=0.01, visible=src.is_splat,
            hint="leave out fainter Gaussians (export splats --min-opacity)")
        h["splat_sh_degree"] = gui.add_dropdown(
            "SH degree", ("3", "2", "1", "0"), initial_value="3", visible=src.is_splat,
            hint="keep the view-dependent colour up to this degree (--max-sh-degree)")
        h["export_splats"] = gui.add_button("export splats", visible=src.is_splat,
                                            disabled=not src.is_splat)
        h["export_progress"] = gui.add_progress_bar(0.0, visible=False)
        h["export_status"] = gui.add_markdown(
            "" if has_run or src.is_splat else "nothing to export from this file")

    out_dir = viewer.output_dir / "exports"

    def start(name, work):
        run_job(session, name, work, h["export_progress"], h["export_status"])

    h["export_mesh"].on_click(lambda _: start("mesh", lambda p: export_mesh_job(
        session, out_dir / f"mesh{h['mesh_file'].value}", int(h["mesh_res"].value), p,
        h["mesh_method"].value)))
    h["export_points"].on_click(lambda _: start("points", lambda p: export_points_job(
        session, out_dir / f"points{h['points_file'].value}", int(h["points_num"].value), p)))
    def splat_filter():
        from fieldkit.export.splats import SplatFilter

        return SplatFilter(float(h["splat_min_opacity"].value),
                           int(h["splat_sh_degree"].value))

    h["export_splats"].on_click(lambda _: start("splats", lambda p: export_splats_job(
        session, out_dir / f"splats{h['splat_file'].value}", p, splat_filter())))
