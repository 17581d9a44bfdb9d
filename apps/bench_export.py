"""Benchmark: mesh export time and size for a trained run (lego hash grid by default).

    .venv/bin/python apps/bench_export.py --run apps/results/compare_lego-400/hashgrid/run \
        --out apps/results/export_lego_cpu.md

Marching cubes at each ``--resolutions`` (density sampling inside the occupancy grid, open3d
isosurface, clean-up, colours), TSDF fusion at ``--tsdf-resolution`` and screened Poisson at
``--poisson-resolution`` (0 skips either); wall time of the whole `fieldkit export mesh` call,
face and vertex counts. Target (issue 8): 256^3 marching cubes of lego in under 30 s on 2 CPU
cores. Poisson, expected before its first run: below TSDF's time (64 rendered views instead of
100, then one reconstruction of ~300k points), with the surface the views saw closed.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from fieldkit.export.mesh import MeshConfig, export_mesh
from fieldkit.export.poisson import PoissonConfig, export_mesh_poisson
from fieldkit.export.tsdf import TsdfConfig, export_mesh_tsdf

from stamp import stamp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=Path("apps/results/compare_lego-400/hashgrid/run"))
    ap.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--tsdf-resolution", type=int, default=256)
    ap.add_argument("--tsdf-views", type=int, default=100)
    ap.add_argument("--poisson-resolution", type=int, default=512)
    ap.add_argument("--out", type=Path, default=Path("apps/results/export_lego_cpu.md"))
    args = ap.parse_args()
    rows = []
    with TemporaryDirectory() as tmp:
        for r in args.resolutions:
            t0 = time.perf_counter()
            _, mesh = export_mesh(args.run, Path(tmp) / f"mc{r}.ply", MeshConfig(resolution=r))
            rows.append((f"marching cubes {r}^3", time.perf_counter() - t0, mesh))
        if args.tsdf_resolution:
            t0 = time.perf_counter()
            _, mesh = export_mesh_tsdf(args.run, Path(tmp) / "tsdf.ply", TsdfConfig(
                resolution=args.tsdf_resolution, views=args.tsdf_views))
            rows.append((f"TSDF {args.tsdf_resolution} voxels/side, {args.tsdf_views} views",
                         time.perf_counter() - t0, mesh))
        if args.poisson_resolution:
            t0 = time.perf_counter()
            depth = round(math.log2(args.poisson_resolution))   # as `export mesh` rounds it
            _, mesh = export_mesh_poisson(args.run, Path(tmp) / "poisson.ply",
                                          PoissonConfig(depth=depth))
            rows.append((f"Poisson {args.poisson_resolution} cells/side, 64 views, 300k points",
                         time.perf_counter() - t0, mesh))
    meta = stamp()
    lines = [f"# Mesh export of {args.run}", "", f"- date: {meta['date']}",
             f"- machine: {meta['machine']}", f"- command: `{meta['command']}`",
             "- wall time of the whole export (load, sample or render, extract, clean, colour, "
             "write)", "", "| method | seconds | faces | vertices |", "|---|---|---|---|"]
    for name, sec, mesh in rows:
        lines.append(f"| {name} | {sec:.1f} | {len(mesh.triangles):,} | "
                     f"{len(mesh.vertices):,} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
