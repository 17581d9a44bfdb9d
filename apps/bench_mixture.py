"""Benchmark: querying a trained splat model's Gaussian mixture at many points, as the
distillation (a splat teacher's point bank) and the mesh export do.

    python apps/bench_mixture.py [--run RUN] [--points 262144] [--repeats 3]

Times ``mixture_density`` and, where the checkout has it, ``mixture_field`` (colour too) on
points drawn from the Gaussians (where the queries go in practice); prints one JSON line with
the median seconds of each. Run it at two commits to compare them.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from fieldkit.distill.teacher import Teacher
from fieldkit.splats import mixture
from fieldkit.train.run import load_model

from stamp import machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path,
                    default=Path("apps/results/distill_lego_cpu/run/hashgrid-to-splat"))
    ap.add_argument("--points", type=int, default=1 << 18)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    model = load_model(args.run)
    teacher = Teacher(model)
    g = torch.Generator().manual_seed(0)
    pts = teacher.mass_points(args.points, g)
    dirs = torch.nn.functional.normalize(torch.randn(args.points, 3, generator=g), dim=-1)
    p = model.params
    gauss = (p["means"], p["quats"], p["scales"].exp(), teacher.splat_peaks())
    k = (model.active_sh_degree + 1) ** 2
    sh = torch.cat([p["sh0"], p["shN"][:, :k - 1]], 1)
    calls = {"mixture_density": lambda: mixture.mixture_density(pts, *gauss)}
    if hasattr(mixture, "mixture_field"):
        calls["mixture_field"] = lambda: mixture.mixture_field(pts, dirs, *gauss, sh)
    row = {"run": str(args.run), "gaussians": int(len(p["means"])), "points": args.points,
           "machine": machine()}
    with torch.no_grad():
        for name, fn in calls.items():
            secs = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                fn()
                secs.append(time.perf_counter() - t0)
            row[f"{name}_s"] = round(statistics.median(secs), 2)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
