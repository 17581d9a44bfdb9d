"""Benchmark: how well the volume a splat model's Gaussians make (a splat teacher's stage-1
targets) reproduces the splats' own rasterized images.

    python apps/bench_splat_volume.py RUN [--views 2] [--scale 0.5] [--samples 256]

For a few training views (pinhole, ``--scale`` of the run's size), renders the splats with
their rasterizer, then volume-renders ``mixture_field`` (``--samples`` uniform samples a ray
inside the box, over black) with two rules for each Gaussian's peak density:
- ``thinnest``: a ray along its thinnest axis gets its opacity (``Teacher.splat_peaks``);
- ``views``: a ray from the training cameras gets its opacity, on average over them (the
  Gaussian's standard deviation along those rays, averaged).
Prints one JSON line per view: PSNR of each volume against the raster, and mean opacities.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch import Tensor

from fieldkit.distill.teacher import Teacher
from fieldkit.distill.views import train_cameras
from fieldkit.render.volume import ray_aabb
from fieldkit.splats.mixture import mixture_field
from fieldkit.splats.transform import quat_to_rotmat
from fieldkit.train.run import load_model, read_config

from stamp import machine


def view_peaks(teacher: Teacher, origins: Tensor) -> Tensor:
    """[N] peaks that give rays from ``origins`` [C, 3] through each centre its opacity, on
    average (standard deviation along those rays, 1 / sqrt(d^T Sigma^-1 d), averaged)."""
    p = teacher.model.params
    rot, scales = quat_to_rotmat(p["quats"]), p["scales"].exp().clamp_min(1e-6)
    total = torch.zeros(len(scales))
    for origin in origins:
        d = torch.nn.functional.normalize(p["means"] - origin, dim=-1)
        y = torch.einsum("nji,nj->ni", rot, d) / scales
        total += torch.rsqrt((y * y).sum(1))
    o = torch.sigmoid(p["opacities"]).clamp(max=0.999)
    return -torch.log1p(-o) / (math.sqrt(2 * math.pi) * total / len(origins))


def volume(teacher: Teacher, cam, peaks: Tensor, bound: float, n: int
           ) -> tuple[Tensor, Tensor]:
    """(rgb [R, 3] over black, opacity [R]) of the mixture along the view's rays."""
    p = teacher.model.params
    o, d = (t.reshape(-1, 3) for t in cam.image_rays(0))
    near, far = ray_aabb(o, d, torch.tensor([-bound] * 3 + [bound] * 3))
    near = near.clamp_min(0)
    length = (far - near).clamp_min(0)
    t = near[:, None] + length[:, None] * (torch.arange(n) + 0.5) / n
    pts = (o[:, None] + d[:, None] * t[..., None]).reshape(-1, 3)
    rgb, sigma = mixture_field(pts, d.repeat_interleave(n, 0), p["means"], p["quats"],
                               p["scales"].exp(), peaks, teacher.model.sh_coeffs())
    alpha = 1 - torch.exp(-sigma.reshape(-1, n) * (length / n)[:, None])
    trans = torch.cumprod(torch.cat([torch.ones(len(alpha), 1), 1 - alpha[:, :-1]], 1), 1)
    w = alpha * trans
    return (w[..., None] * rgb.reshape(-1, n, 3)).sum(1), w.sum(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--scale", type=float, default=0.5)
    ap.add_argument("--samples", type=int, default=256)
    args = ap.parse_args()
    cfg = read_config(args.run)
    bound = float(cfg["normalisation"]["bound"])
    teacher = Teacher(load_model(args.run))
    cams, _ = train_cameras(args.run, cfg)
    with torch.no_grad():
        peaks = {"thinnest": teacher.splat_peaks(), "views": view_peaks(teacher, cams.positions)}
        for i in torch.linspace(0, len(cams) - 1, args.views + 1).long()[:-1].tolist():
            cam = cams[i]
            cam = cam.resized((cam.width * args.scale).round().long(),
                              (cam.height * args.scale).round().long())
            cam = type(cam)(cam.c2w, cam.K, cam.width, cam.height)   # pinhole
            raster = teacher.render_view(cam)
            row = {"run": str(args.run), "view": i, "size": [int(cam.width), int(cam.height)],
                   "raster_alpha": round(float(raster["alpha"].mean()), 3)}
            for name, pk in peaks.items():
                t0 = time.perf_counter()
                rgb, acc = volume(teacher, cam, pk, bound, args.samples)
                mse = float(((rgb - raster["rgb"].reshape(-1, 3)) ** 2).mean())
                row[f"{name}_psnr"] = round(-10 * math.log10(mse), 2)
                row[f"{name}_alpha"] = round(float(acc.mean()), 3)
                row[f"{name}_s"] = round(time.perf_counter() - t0, 1)
            row["machine"] = machine()
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
