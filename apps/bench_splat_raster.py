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
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from fieldkit.render.splat import bin_tiles, project, rasterize

from stamp import stamp


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


def load_rasterizer(ref: str):
    """``rasterize`` of ``fieldkit/render/splat.py`` as it was at git ``ref`` (or of the file
    ``ref`` names), as a module of its own, so that both versions run interleaved in one
    process."""
    import importlib.util
    import subprocess
    import tempfile

    root = Path(__file__).resolve().parents[1]
    src = Path(ref).read_text() if Path(ref).is_file() else subprocess.run(
        ["git", "show", f"{ref}:fieldkit/render/splat.py"], cwd=root, check=True,
        capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "splat_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("splat_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["splat_before"] = module          # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.rasterize


def timed(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each of ``fns`` (name: callable), called in turn ``repeats`` times
    after one warm-up each; the order alternates (a call runs faster or slower right after
    another one freed its memory)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for rep in range(repeats):
        for name, fn in list(fns.items())[::-1 if rep % 2 else 1]:
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def run_model(run_dir: Path, rasterizers: dict, repeats: int) -> dict:
    """A trained splat run seen from its first training camera, as its trainer renders it
    (SH degree 3, white background; loss: the mean of the image)."""
    from fieldkit.distill.views import train_cameras
    from fieldkit.splats.model import SplatModel
    from fieldkit.train.run import read_config

    model = SplatModel.load(run_dir)
    model.active_sh_degree = model.config.sh_degree
    cam = train_cameras(run_dir, read_config(run_dir))[0][0]
    p = model.params
    size = (int(cam.width[0]), int(cam.height[0]))
    view = torch.linalg.inv(cam.c2w[0])
    params = [p["means"], p["quats"], torch.exp(p["scales"]), torch.sigmoid(p["opacities"]),
              model.colors(cam.c2w[0, :3, 3])]
    params = [t.detach() for t in params]
    return measure(f"{run_dir.name} ({model.num_gaussians:,} Gaussians)", params, view,
                   cam.K[0], size, rasterizers, repeats)


def measure(name: str, params: list, view, K, size: tuple[int, int], rasterizers: dict,
            repeats: int) -> dict:
    w, h = size
    bg = torch.ones(3)

    def forward(raster):
        def fn():
            with torch.no_grad():
                raster(*params, view, K, w, h, bg)
        return fn

    def backward(raster):
        def fn():
            leaves = [t.clone().requires_grad_(True) for t in params]
            out, _ = raster(*leaves, view, K, w, h, bg)
            out["rgb"].mean().backward()
        return fn

    with torch.no_grad():
        proj = project(*params[:4], view, K, w, h)
        bins = bin_tiles(proj, w, h)
    fwd = timed({k: forward(r) for k, r in rasterizers.items()}, repeats)
    bwd = timed({k: backward(r) for k, r in rasterizers.items()}, repeats)
    return {"name": name, "size": f"{w}x{h}", "visible": int(proj.visible.sum()),
            "intersections": len(bins.gaussian), "forward_s": fwd, "forward_backward_s": bwd}


def run(n: int, size: int, rasterizers: dict, repeats: int) -> dict:
    params, view, K = scene(n, size)
    return measure(f"{n:,} random", params, view, K, (size, size), rasterizers, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gaussians", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 400])
    ap.add_argument("--runs", type=Path, nargs="*", default=[],
                    help="trained splat runs to time too (their first training camera)")
    ap.add_argument("--before", default=None, metavar="GIT_REF",
                    help="also time the rasterizer as it was at this commit, interleaved")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("apps/results/splat_raster_cpu.md"))
    args = ap.parse_args()
    rasterizers = {"now": rasterize}
    if args.before:
        rasterizers = {"before": load_rasterizer(args.before), "now": rasterize}
    rows = [run(n, s, rasterizers, args.repeats) for n in args.gaussians for s in args.sizes]
    rows += [run_model(r, rasterizers, args.repeats) for r in args.runs]
    meta = stamp()
    cols = list(rasterizers)
    head = " | ".join(f"forward s ({c}) | forward+backward s ({c})" for c in cols) \
        if args.before else "forward s | forward+backward s"
    lines = ["# Pure-torch splat rasterizer on CPU", "",
             f"- date: {meta['date']}",
             f"- machine: {meta['machine']}", f"- command: `{meta['command']}`",
             "- median of the repeats after one warm-up" + (", versions interleaved"
                                                            if args.before else ""), "",
             f"| Gaussians | size | visible | tile intersections | {head} |"
             + (" fwd+bwd speed-up |" if args.before else ""),
             "|---|---|---|---|" + "---|---|" * len(cols) + ("---|" if args.before else "")]
    for r in rows:
        times = " | ".join(f"{r['forward_s'][c]:.3f} | {r['forward_backward_s'][c]:.3f}"
                           for c in cols)
        gain = (f" {r['forward_backward_s']['before'] / r['forward_backward_s']['now']:.2f}x |"
                if args.before else "")
        lines.append(f"| {r['name']} | {r['size']} | {r['visible']:,} | "
                     f"{r['intersections']:,} | {times} |{gain}")
        print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
