"""Benchmark: the pure-torch splat rasterizer on CPU, forward and forward+backward.

    .venv/bin/python apps/bench_splat_raster.py --out apps/results/splat_raster_cpu.md

N Gaussians with random positions in [-0.8, 0.8]^3, random rotations, log-normal scales around
0.01 (box units) and random opacities, seen from 3 box units away with a 1.2 x width focal
length: about 2 intersections per Gaussian and 3.7 px mean bounding radius at 200x200. Reports
the median of ``--repeats`` runs after one warm-up. Target (issue 6): 10^5 Gaussians at 200x200
forward in <= 1 s on 2 cores.
"""
from __future__ import annotations

import argparse
import datetime
import math
import platform
import statistics
import time
from pathlib import Path

import torch

from fieldkit.render.splat import bin_tiles, project, rasterize


def scene(n: int, size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) * 2 - 1) * 0.8
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.randn(n, 3, generator=g) * 0.3 + math.log(0.01))
    opac = torch.sigmoid(torch.randn(n, generator=g))
    colors = torch.rand(n, 3, generator=g)
    c2w = torch.eye(4)
    c2w[2, 3] = -3.0
    f = 1.2 * size
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])
    return [means, quats, scales, opac, colors], torch.linalg.inv(c2w), K


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(n: int, size: int, repeats: int) -> dict:
    params, view, K = scene(n, size)
    bg = torch.ones(3)

    def forward():
        with torch.no_grad():
            rasterize(*params, view, K, size, size, bg)

    def backward():
        leaves = [p.clone().requires_grad_(True) for p in params]
        out, _ = rasterize(*leaves, view, K, size, size, bg)
        out["rgb"].sum().backward()

    with torch.no_grad():
        proj = project(*params[:4], view, K, size, size)
        bins = bin_tiles(proj, size, size)
    return {"n": n, "size": size, "visible": int(proj.visible.sum()),
            "intersections": len(bins.gaussian), "forward_s": timed(forward, repeats),
            "forward_backward_s": timed(backward, repeats)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gaussians", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 400])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("apps/results/splat_raster_cpu.md"))
    args = ap.parse_args()
    rows = [run(n, s, args.repeats) for n in args.gaussians for s in args.sizes]
    cmd = ("python apps/bench_splat_raster.py --gaussians " + " ".join(map(str, args.gaussians))
           + " --sizes " + " ".join(map(str, args.sizes)) + f" --repeats {args.repeats}")
    lines = ["# Pure-torch splat rasterizer on CPU", "",
             f"- date: {datetime.date.today().isoformat()}",
             f"- machine: {platform.machine()}, {torch.get_num_threads()} threads, torch "
             f"{torch.__version__}, no GPU", f"- command: `{cmd}`",
             "- median of the repeats after one warm-up; target: 10^5 Gaussians at 200x200 "
             "forward <= 1 s", "",
             "| Gaussians | size | visible | tile intersections | forward s | forward+backward s |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['size']}x{r['size']} | {r['visible']:,} | "
                     f"{r['intersections']:,} | {r['forward_s']:.3f} | "
                     f"{r['forward_backward_s']:.3f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
