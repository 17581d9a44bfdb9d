"""Benchmark: memory and time of splat training steps on large views (the differentiable
rasterizer's pair budget, ``fieldkit/render/splat.py`` ``KEEP_PAIRS``).

    .venv/bin/python apps/bench_splat_memory.py ../shared/scenes/fox --downscale 1 \\
        --steps 3 --keep-pairs default --out apps/results/splat_memory_cpu/fox_d1.json

Builds the run ``fieldkit train SCENE --model splat --downscale N`` would build (same
initialisation, same trainer) and times ``--steps`` of its training steps after one warm-up
step. Each configuration should run in a process of its own: the peak resident memory
(``ru_maxrss``) is the process's, image loading included. ``--keep-pairs`` sets the box pixels
a view up to which every pair is kept for the backward pass (``default``, or a number; 0
recomputes every batch, a huge number keeps every pair as before the budget existed).
``--init FILE.ply`` starts from a 3DGS file (``fieldkit train --init``), e.g. millions of
Gaussians.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from stamp import stamp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scene", type=Path)
    ap.add_argument("--downscale", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--keep-pairs", default="default")
    ap.add_argument("--init", type=Path, default=None, help="a 3DGS .ply to start from")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    import fieldkit.render.splat as splat
    from fieldkit.render.splat import pixel_boxes, project
    from fieldkit.train.config import TrainConfig
    from fieldkit.train.run import prepare

    if args.keep_pairs != "default":   # (the rasterizer before the budget has no KEEP_PAIRS)
        splat.KEEP_PAIRS = int(float(args.keep_pairs))
    t0 = time.perf_counter()
    trainer = prepare(args.scene, "splat", Path(tempfile.mkdtemp()) / "run", TrainConfig(),
                      downscale=args.downscale, device="cpu", init=args.init)
    setup_s = time.perf_counter() - t0
    rss_setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    model, cam = trainer.model, trainer.scene.cameras[trainer.view(0)]
    with torch.no_grad():        # the first view's box pixels (what KEEP_PAIRS is compared to)
        p = model.params
        w, h = int(cam.width[0]), int(cam.height[0])
        proj = project(p["means"], p["quats"], p["scales"].exp(), torch.sigmoid(
            p["opacities"]), torch.linalg.inv(cam.c2w[0]), cam.K[0], w, h)
        box = pixel_boxes(proj, w, h)[proj.visible]
        box_pixels = int(((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])).sum())
    times = []
    for k in range(args.steps + 1):
        t = time.perf_counter()
        trainer.step()
        if k:                        # the first step warms up
            times.append(time.perf_counter() - t)
        print(f"step {k}: {time.perf_counter() - t:.2f} s", flush=True)
    result = {
        **stamp(),
        "fieldkit": str(Path(splat.__file__).parents[2]),
        "view": f"{w}x{h}", "gaussians": model.num_gaussians,
        "box_pixels_first_view": box_pixels, "keep_pairs": getattr(splat, "KEEP_PAIRS", None),
        "setup_s": round(setup_s, 1), "rss_after_setup_gib": round(rss_setup, 2),
        "step_s_median": round(statistics.median(times), 2) if times else None,
        "step_s": [round(t, 2) for t in times],
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
