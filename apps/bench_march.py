"""Benchmark: where a trained volumetric model's samples go, and what marching and rendering
one view cost (pure-torch path, this machine).

    .venv/bin/python apps/bench_march.py runs/a runs/b ... [--view 5] [--out FILE.json]

For each run: its marching settings (levels, cone angle, smallest and largest step), the
fraction of occupied grid cells per level, the candidates a ray generates (cone lattice), the
samples per ray kept by the occupancy grid and then by early stop / alpha_thre, their split by
distance t from the camera, and the wall time of marching and of ``render_rays`` for one
training view (rays through every pixel). Read the runs' ``metrics.json`` beside it for PSNR.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import torch

from fieldkit.distill.views import train_cameras
from fieldkit.fields.registry import load_model_file
from fieldkit.render.cone import ConeLattice, march_cone
from fieldkit.render.volume import march, midpoints, ray_aabb

BINS = [(0, 1), (1, 2), (2, 4), (4, 8), (8, 16), (16, 64)]


@torch.no_grad()
def measure(run: Path, view: int) -> dict:
    model = load_model_file(run / "model.safetensors")
    model.eval()
    cams, _ = train_cameras(run, json.loads((run / "config.json").read_text()))
    o, d = (x.reshape(-1, 3) for x in cams.image_rays(view))
    rc = model.config.render

    def sigma_fn(t0, t1, ri):
        return model.field.density(midpoints(o, d, t0, t1, ri))

    def run_march(prune: bool):
        kw = dict(step_size=rc.step_size, aabb=model.aabb, early_stop_eps=rc.early_stop_eps,
                  alpha_thre=rc.alpha_thre, sigma_fn=sigma_fn if prune else None)
        if rc.cone_marching:
            return march_cone(o, d, model.grid, cone_angle=rc.cone_angle, max_step=rc.max_step,
                              **kw)
        return march(o, d, model.grid, **kw)

    t = time.perf_counter()
    occupied = run_march(False)
    t_march = time.perf_counter() - t
    t = time.perf_counter()
    pruned = run_march(True)
    t_prune = time.perf_counter() - t
    t = time.perf_counter()
    model.render_rays(o, d, torch.ones(3))
    t_render = time.perf_counter() - t
    t_near, t_far = ray_aabb(o, d, model.aabb)
    cone = rc.cone_angle if rc.cone_marching else 0.0
    lattice = ConeLattice(t_near, t_far, rc.step_size, cone, max(rc.max_step, rc.step_size))
    n = len(o)
    return {
        "run": str(run), "rays": n, "levels": rc.cascades, "cone_angle": rc.cone_angle,
        "step_size": rc.step_size, "max_step": rc.max_step if rc.cone_marching else rc.step_size,
        "occupied_per_level": model.grid.level_binaries.float().mean((1, 2, 3)).tolist(),
        "candidates_per_ray": float(lattice.counts.float().mean()),
        "occupied_per_ray": len(occupied) / n, "kept_per_ray": len(pruned) / n,
        "kept_per_ray_by_t": {f"{a}-{b}": int(((pruned.t_mids >= a) & (pruned.t_mids < b))
                                                .sum()) / n for a, b in BINS},
        "march_s": t_march, "march_and_prune_s": t_prune, "render_rays_s": t_render,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--view", type=int, default=5, help="training camera to render")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()
    rows = [measure(r, args.view) for r in args.runs]
    for r in rows:
        print(f"{r['run']}: levels {r['levels']}, cone {r['cone_angle']:.4g}, candidates/ray "
              f"{r['candidates_per_ray']:.0f}, occupied {r['occupied_per_ray']:.0f}, kept "
              f"{r['kept_per_ray']:.0f}; march {r['march_s']:.2f} s, render_rays "
              f"{r['render_rays_s']:.2f} s; by t {r['kept_per_ray_by_t']}")
    if args.out:
        meta = {"date": datetime.date.today().isoformat(), "machine": platform.machine(),
                "threads": torch.get_num_threads(), "torch": torch.__version__,
                "view": args.view}
        args.out.write_text(json.dumps({"meta": meta, "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
