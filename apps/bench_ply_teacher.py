"""Benchmark: distilling a 3DGS .ply file, with and without the scene it was trained on, against
distilling the splat run it came from.

    python apps/bench_ply_teacher.py RUN [--to hashgrid] [--max-time 75] [--only ROW ..] --out DIR

RUN is a splat run. Its Gaussians are exported as a 3DGS .ply (world units, as any trainer
writes them), then three students are distilled for the same budget, one after the other:
- ``run``: ``fieldkit distill RUN`` (the run's cameras and box);
- ``ply+scene``: ``fieldkit distill FILE.ply --scene SCENE --downscale D`` (the run's scene);
- ``ply``: ``fieldkit distill FILE.ply`` (a box around the Gaussians, a sphere of views);
- ``folder``: ``fieldkit distill FOLDER``, the run exported as the original 3DGS trainer's
  output folder (``fieldkit export splats RUN --out FOLDER``: the .ply and a cameras.json of
  the training cameras; their box, from those cameras). Its cfg_args, which names the scene
  and would make it the ``ply+scene`` row again, is removed: the folder as it arrives from
  another machine.
- ``gsplat`` (COLMAP scenes): ``fieldkit distill FOLDER``, the run's Gaussians as gsplat's
  simple_trainer leaves them (``ckpts/ckpt_N_rank0.pt`` and a cfg.yml naming the scene): moved
  into its normalised frame, with the eigenvector signs of ``--gsplat-sign`` (the reader must
  find them from the sparse points);
- ``gsplat-alone``: the same folder with its dataset elsewhere (the Gaussians in gsplat's
  frame, a sphere of views).
Each is compared with the photos on the same evenly spaced test views of the scene: the
``ply``, ``folder`` and ``gsplat-alone`` students, which have their own boxes (the last in
gsplat's frame), with the scene's cameras moved into that box.
Writes DIR/bench.json and DIR/bench.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from fieldkit.cli import main as cli
from fieldkit.data.normalize import Normalisation
from fieldkit.data.scene import Scene, load_scene
from fieldkit.distill.config import DistillConfig
from fieldkit.distill.report import versus_photos
from fieldkit.distill.run import distill
from fieldkit.train.config import TrainConfig
from fieldkit.data.scene import read_raw
from fieldkit.splats.gs_folder import latest_ply
from fieldkit.splats.gsplat_folder import frame_candidates, write_gsplat_result
from fieldkit.splats.ply import read_splat_ply
from fieldkit.splats.transform import transform_splats
from fieldkit.train.run import load_model, read_config

from stamp import command

ROWS = ("run", "ply+scene", "ply", "folder", "gsplat", "gsplat-alone")


def moved_scene(scene: Scene, to: Normalisation, world: np.ndarray | None = None) -> Scene:
    """``scene`` with its cameras moved from its box into the box of ``to``, whose world is the
    scene's moved by the similarity ``world`` [4, 4] (default: the same world)."""
    m = to.matrix() @ (np.eye(4) if world is None else world) @ \
        scene.normalisation.inverse_matrix()                         # scene box -> other box
    scale = float(np.cbrt(np.linalg.det(m[:3, :3])))
    m = torch.as_tensor(m, dtype=torch.float64)
    c2w = scene.cameras.c2w.double()
    out = c2w.clone()
    out[:, :3, :3] = m[:3, :3] @ c2w[:, :3, :3] / scale
    out[:, :3, 3] = c2w[:, :3, 3] @ m[:3, :3].T + m[:3, 3]
    cams = dataclasses.replace(scene.cameras, c2w=out.float())
    return dataclasses.replace(scene, cameras=cams, normalisation=to)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--to", default="hashgrid")
    ap.add_argument("--max-time", type=float, default=75.0)
    ap.add_argument("--gt-views", type=int, default=20)
    ap.add_argument("--only", nargs="+", choices=list(ROWS),
                    help="distil these teachers only (default: all; gsplat ones need COLMAP)")
    ap.add_argument("--gsplat-sign", type=int, default=2, choices=range(4),
                    help="which of gsplat's four frames (eigenvector signs) the folder is in")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = read_config(args.run)
    scene_path, downscale = Path(cfg["scene"]), int(cfg.get("downscale", 1))
    ply = args.out / f"{args.run.name}.ply"
    folder = args.out / f"{args.run.name}_3dgs"
    assert cli(["export", "splats", str(args.run), "--out", str(ply)]) == 0
    assert cli(["export", "splats", str(args.run), "--out", str(folder)]) == 0
    (folder / "cfg_args").unlink()   # its cameras.json alone, as from another machine
    teachers = {"run": (args.run, {}), "ply+scene": (ply, {"scene": scene_path,
                                                            "downscale": downscale}),
                "ply": (ply, {}), "folder": (folder, {})}
    frame, raw = None, read_raw(scene_path)
    if raw.points is not None:
        frame = frame_candidates(raw.c2w, raw.points)[args.gsplat_sign]
        s = float(np.cbrt(np.linalg.det(frame[:3, :3])))
        moved = transform_splats(read_splat_ply(ply), torch.from_numpy(frame[:3, :3] / s), s,
                                 torch.from_numpy(frame[:3, 3]))
        step = int(latest_ply(folder).parent.name.split("_")[1])
        for name, data in (("gsplat", scene_path.resolve()), ("gsplat-alone", "/nowhere")):
            result = args.out / f"{args.run.name}_{name}"
            write_gsplat_result(result, moved, step, str(data), data_factor=downscale)
            teachers[name] = (result, {})
    dc = DistillConfig(gt_views=args.gt_views)
    rows = {}
    for name, (teacher, extra) in teachers.items():
        if args.only and name not in args.only:
            continue
        out = args.out / name.replace("+", "_")
        t0 = time.perf_counter()
        report = distill(teacher, args.to, out, TrainConfig(max_time=args.max_time), dc,
                         quiet=True, **extra)
        seconds = time.perf_counter() - t0
        if "vs_photos" not in report:   # a box of its own: the scene's photos moved into it
            scene = load_scene(scene_path, downscale=downscale)
            norm = Normalisation.from_dict(read_config(out)["normalisation"])
            world = frame if name == "gsplat-alone" else None
            report["vs_photos"] = versus_photos({"student": load_model(out).eval()},
                                                moved_scene(scene, norm, world), args.gt_views)
        rows[name] = {"cameras": report["cameras"], "steps": report["student"]["steps"],
                      "vs_teacher": report["vs_teacher"]["psnr"],
                      "vs_photos": report["vs_photos"]["student"]["psnr"],
                      "teacher_vs_photos": report["vs_photos"].get("teacher", {}).get("psnr"),
                      "distill_seconds": report["time"]["distill_seconds"],
                      "wall_seconds": seconds}
        print(name, json.dumps(rows[name]))
    result = {"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "command": command(),
              "rows": rows}
    (args.out / "bench.json").write_text(json.dumps(result, indent=1))
    teacher = next((r["teacher_vs_photos"] for r in rows.values() if r["teacher_vs_photos"]),
                   float("nan"))
    lines = [f"# {args.run.name}: splats -> {args.to} from the run, from its .ply with the "
             f"scene, from the .ply alone, from a 3DGS output folder, from gsplat's results", "",
             f"- date: {result['date']}; machine: {result['machine']}, {result['threads']} "
             f"threads, torch {result['torch']}", f"- command: `{result['command']}`",
             f"- teacher vs photos: {teacher:.2f} dB ({args.gt_views} test views)", "",
             "| teacher | views from | steps | vs teacher (held-out) | vs photos | distill s |",
             "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['cameras']} | {r['steps']} | {r['vs_teacher']:.2f} | "
                     f"{r['vs_photos']:.2f} | {r['distill_seconds']:.0f} |")
    (args.out / "bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
