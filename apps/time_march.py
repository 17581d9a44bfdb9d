"""Time ``volume.march`` (uniform steps) on one view of a trained run, to compare commits.

    PYTHONPATH=OTHER_CHECKOUT .venv/bin/python apps/time_march.py RUN [--view 3] [--repeats 6]

Imports only what every version of ``fieldkit.render.volume`` has, so the same script runs
against an older checkout on PYTHONPATH. Prints the samples (occupied, then after early stop
and alpha_thre) and the median wall time of each march after one warm-up.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import fieldkit
from fieldkit.distill.views import train_cameras
from fieldkit.fields.registry import load_model_file
from fieldkit.render.volume import march, midpoints


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--view", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=6)
    args = ap.parse_args()
    model = load_model_file(args.run / "model.safetensors")
    model.eval()
    cams, _ = train_cameras(args.run, json.loads((args.run / "config.json").read_text()))
    o, d = (x.reshape(-1, 3) for x in cams.image_rays(args.view))
    rc = model.config.render

    def sigma_fn(a, b, r):
        return model.field.density(midpoints(o, d, a, b, r))

    plain, pruned, counts = [], [], ()
    for _ in range(args.repeats):
        t = time.perf_counter()
        s = march(o, d, model.grid, step_size=rc.step_size, aabb=model.aabb)
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        s2 = march(o, d, model.grid, step_size=rc.step_size, aabb=model.aabb, sigma_fn=sigma_fn,
                   early_stop_eps=rc.early_stop_eps, alpha_thre=rc.alpha_thre)
        pruned.append(time.perf_counter() - t)
        counts = (len(s), len(s2))
    print(f"{Path(fieldkit.__file__).parent}: {len(o)} rays, {counts[0]} occupied samples, "
          f"{counts[1]} after pruning; march {statistics.median(plain[1:]) * 1e3:.1f} ms, "
          f"with pruning {statistics.median(pruned[1:]) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
