"""Benchmark: distilling part of a scene (`fieldkit distill --crop`), then meshing that part.

    .venv/bin/python apps/bench_crop.py --teacher runs/lego_splat \
        --crop -1 -1 -0.15 1 1 1 --out apps/results/crop_lego_cpu

The teacher is distilled twice into a hash grid for the same time: once cropped to the box
(the student learns the part alone) and once whole. Both students, cropped to the box
afterwards, are compared with the cropped teacher at the scene's test cameras (evenly spaced),
so they are measured on the same part. Then the cropped student is meshed (marching cubes,
`--crop`), and the whole student too, cropped at export, for comparison.

Expected before the run: the cropped student ends closer to the cropped teacher, by about
0.5 dB, as its point samples, rays and capacity all go to the part; without the base plate
(lego: ~37% of the splat teacher's Gaussians) the mesh holds the loader alone.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fieldkit.distill.run import distill
from fieldkit.export.mesh import MeshConfig, export_mesh
from fieldkit.render.crop import CropBox, crop_model
from fieldkit.train.config import TrainConfig
from fieldkit.train.metrics import psnr
from fieldkit.train.run import load_model, load_run_scene

from stamp import stamp


@torch.no_grad()
def renders(model, cameras, ids) -> list[torch.Tensor]:
    """rgb over white at ``cameras[ids]``."""
    model.eval()
    white = torch.ones(3)
    return [model.render(cameras[i], white)["rgb"].clamp(0, 1) for i in ids]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--crop", type=float, nargs=6, required=True)
    ap.add_argument("--to", default="hashgrid")
    ap.add_argument("--max-time", type=float, default=None,
                    help="distillation seconds (default: distill's own)")
    ap.add_argument("--views", type=int, default=20, help="test cameras, evenly spaced")
    ap.add_argument("--resolution", type=int, default=256, help="marching-cubes resolution")
    ap.add_argument("--out", type=Path, default=Path("apps/results/crop_lego_cpu"))
    ap.add_argument("--runs", type=Path, default=Path("runs/crop"),
                    help="where the students go (not committed)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    box = CropBox.from_flat(args.crop)
    scene = load_run_scene(args.teacher)
    test = scene.split("test")
    ids = [int(test[round(i * (len(test) - 1) / max(args.views - 1, 1))])
           for i in range(min(args.views, len(test)))]
    teacher = crop_model(load_model(args.teacher), box)
    target = renders(teacher, scene.cameras, ids)

    rows = {}
    for name, crop in (("cropped", box), ("whole", None)):
        run = args.runs / name
        if run.exists():
            raise SystemExit(f"{run} exists; remove it or pass another --runs")
        train = TrainConfig(max_time=args.max_time)
        t0 = time.perf_counter()
        report = distill(args.teacher, args.to, run, train, crop=crop, quiet=True)
        wall = time.perf_counter() - t0
        student = crop_model(load_model(run), box)
        got = renders(student, scene.cameras, ids)
        vs = sum(float(psnr(a, b)) for a, b in zip(got, target)) / len(ids)
        t0 = time.perf_counter()
        mesh_path, mesh = export_mesh(run, args.out / f"{name}.ply",
                                      MeshConfig(resolution=args.resolution, crop=box))
        rows[name] = {
            "steps": report["student"]["steps"],
            "distill_seconds": report["time"]["distill_seconds"], "wall_seconds": wall,
            "vs_cropped_teacher_psnr": vs,
            "mesh_faces": len(mesh.triangles), "mesh_seconds": time.perf_counter() - t0,
        }
        mesh_path.unlink()   # the meshes are large; the numbers stay
        print(name, rows[name])

    meta = {**stamp(),
            "teacher_gaussians_or_params": teacher.num_gaussians
            if getattr(teacher, "kind", "") == "splat" else teacher.num_params,
            "views": len(ids), "rows": rows}
    (args.out / "bench.json").write_text(json.dumps(meta, indent=2))
    lines = [f"# Distilling part of a scene: {args.teacher} -> {args.to}, --crop "
             f"{' '.join(f'{v:g}' for v in args.crop)}", "",
             f"- date: {meta['date']}", f"- machine: {meta['machine']}",
             f"- command: `{meta['command']}`",
             f"- PSNR: each student cropped to the box, against the cropped teacher, at "
             f"{len(ids)} test cameras (white background)", "",
             "| student | steps | distill s | vs cropped teacher | mesh faces (--crop) | "
             "mesh s |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['steps']} | {r['distill_seconds']:.0f} | "
                     f"{r['vs_cropped_teacher_psnr']:.2f} dB | {r['mesh_faces']:,} | "
                     f"{r['mesh_seconds']:.1f} |")
    (args.out / "bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
