"""Splat training steps on the CPU: the torch blending (``splat.composite``) against the
compiled C++ loops (``splat_cpu``), alternating in one process.

Each case loads a trained splat run (its Gaussians at the size they reached), makes a
SplatTrainer on the scene at the given size and windows, and times ``--steps`` training steps
with one path, then the other, for ``--rounds`` rounds (densification off, all SH bands on, so
that both see the same work); then one forward + backward of a view's render alone, and of
its projection by the torch code and by the compiled one (``splat_cpu_project``).

    python apps/bench_splat_cpu_blend.py --case fox:8:0:runs/fox_h2s ... \
        [--render-case lego-400:2:runs/lego_splat:100] \
        [--baseline-source OLD.cpp --baseline-cflags=-O3] --out FILE.json

A case is SCENE_NAME:DOWNSCALE:STEP_PIXELS:RUN (the scene in ../shared/scenes).
``--baseline-source``: an earlier version of ``csrc/splat_blend.cpp`` (built with
``--baseline-cflags``; with the current projection and module when it has no module of its
own) joins the alternation as a third path, "baseline", for a same-process
comparison of two versions of the compiled loops. ``--torch-projection``: the compiled
blending with the torch projection joins as "torch-projection" (what the projection's C++ twin
buys in a step).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from fieldkit.render import splat as S
from fieldkit.render import splat_cpu
from fieldkit.render import splat_cpu_project
from fieldkit.render.splat_cpu import blend_sums, cpu_blend_status
from fieldkit.splats.model import SplatConfig
from fieldkit.train.config import TrainConfig
from fieldkit.train.run import load_model, prepare

SCENES = Path(__file__).resolve().parents[1].parent / "shared" / "scenes"


CURRENT = splat_cpu._extension


COMPILED_PROJECTION = splat_cpu_project.project_cpu


def paths(baseline, torch_projection: bool = False) -> list[tuple[str, str, object]]:
    """(name, render backend, extension) of each path timed."""
    out = [("torch", "torch", CURRENT)]
    if baseline is not None:
        out.append(("baseline", "auto", baseline))
    if torch_projection:
        out.append(("torch-projection", "auto", CURRENT))
    return out + [("compiled", "auto", CURRENT)]


def use_projection(name: str) -> None:
    """Path "torch-projection" blends with the compiled loops but projects with the torch
    code; the others project as the render chooses."""
    splat_cpu_project.project_cpu = (S.project if name == "torch-projection"
                                     else COMPILED_PROJECTION)


def projection_times(model, camera) -> dict:
    """Seconds of one forward + backward of the projection alone, torch code and compiled
    (best of 5)."""
    p = model.params
    viewmat = torch.linalg.inv(camera.c2w[0])
    W, H = int(camera.width[0]), int(camera.height[0])
    out = {}
    for name, fn in (("torch", S.project), ("compiled", COMPILED_PROJECTION)):
        best = []
        for _ in range(5):
            t0 = time.perf_counter()
            proj = fn(p["means"], p["quats"], torch.exp(p["scales"]),
                      torch.sigmoid(p["opacities"]), viewmat, camera.K[0], W, H)
            (proj.means2d.sum() + proj.conics.sum() + proj.opacities.sum()
             + proj.depths.sum()).backward()
            best.append(time.perf_counter() - t0)
            model.zero_grad(set_to_none=True)
        out[name] = min(best)
    return out


def use_extension(ext) -> None:
    """Blend with ``ext`` (a loaded extension, or ``CURRENT``, the function that loads ours)."""
    splat_cpu._extension = ext if ext is CURRENT else (lambda: ext)


def build_baseline(source: Path, cflags: list[str]):
    from torch.utils.cpp_extension import load

    CURRENT()   # puts ninja on PATH
    sources = [source]
    if "PYBIND11_MODULE" not in source.read_text():   # the blending alone: ours around it
        sources += [p for p in splat_cpu.SOURCES if p.name != "splat_blend.cpp"]
    return load(name="fieldkit_splat_blend_baseline", sources=[str(p) for p in sources],
                extra_cflags=cflags, extra_ldflags=[f for f in cflags if f == "-fopenmp"])


def raster_times(model, camera, baseline=None) -> dict:
    """Seconds of one forward and of its backward, each path, for ``camera``."""
    p = model.params
    c2w = camera.c2w[0]
    viewmat = torch.linalg.inv(c2w)
    W, H = int(camera.width[0]), int(camera.height[0])
    out = {}
    for name, _, ext in paths(baseline):
        use_extension(ext)
        best = []
        for _ in range(3):
            proj = S.project(p["means"], p["quats"], torch.exp(p["scales"]),
                             torch.sigmoid(p["opacities"]), viewmat, camera.K[0], W, H)
            colors = model.colors(c2w[:3, 3])
            bins = S.bin_tiles(proj, W, H)
            t0 = time.perf_counter()
            if name == "torch":
                img = S.composite(proj, bins, colors, W, H)["rgb"]
            else:
                img = S.finish(blend_sums(proj, bins, colors, W, H), 3, W, H, None)["rgb"]
            t1 = time.perf_counter()
            img.square().sum().backward()
            best.append((t1 - t0, time.perf_counter() - t1))
            model.zero_grad(set_to_none=True)
        f, b = min(best)
        out[name] = {"forward_s": f, "backward_s": b}
    return out


def bench(case: str, steps: int, rounds: int, baseline=None, torch_projection=False) -> dict:
    scene, ds, sp, run = case.split(":", 3)
    tr = prepare(SCENES / scene, "splat", Path("/tmp/bench_splat_cpu_blend"),
                 TrainConfig(max_steps=10**6, eval_every=0, checkpoint_every=1e9,
                             log_every=10**9), downscale=int(ds),
                 model_config=SplatConfig(step_pixels=int(sp)))
    tr.model.load_state_dict(load_model(Path(run)).state_dict())
    tr._make_optimizer()
    tr.base_lrs = {g["name"]: g["lr"] for g in tr.optimizer.param_groups}
    tr.densifier.step = lambda *a, **k: {"reset": False}   # the same Gaussians throughout
    tr.schedule_step = lambda: 10**6                          # all SH bands
    times: dict[str, list[float]] = {name: [] for name, _, _ in paths(baseline,
                                                                      torch_projection)}
    for r in range(rounds):
        for name, backend, ext in paths(baseline, torch_projection):
            use_extension(ext)
            use_projection(name)
            tr.model.config.render.backend = backend
            torch.manual_seed(r)
            t0 = time.perf_counter()
            for _ in range(steps):
                tr.step()
            times[name].append((time.perf_counter() - t0) / steps)
    cam = tr.scene.cameras[int(tr.train_views[0])]
    step_s = {name: statistics.median(t) for name, t in times.items()}
    return {"case": case, "gaussians": tr.model.num_gaussians,
            "view": f"{int(cam.width[0])}x{int(cam.height[0])}", "step_pixels": int(sp),
            "step_s": step_s, "speedup": step_s["torch"] / step_s["compiled"],
            "rounds": times, "raster": raster_times(tr.model, cam, baseline),
            "projection_s": projection_times(tr.model, cam)}


def render_bench(case: str) -> dict:
    """No-grad renders of a test view by both paths, the run's Gaussians each replaced by
    ``replicas`` copies jittered by one standard deviation and shrunk by replicas^(1/3) (the
    size of a real capture's 3DGS file; ``apps/bench_splat_scale.py`` makes them the same way).
    A case is SCENE_NAME:DOWNSCALE:RUN:REPLICAS."""
    from fieldkit.data.scene import load_scene

    scene_name, ds, run, replicas = case.split(":", 3)
    r = int(replicas)
    model = load_model(Path(run)).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        p = {k: v.detach() for k, v in model.params.items()}
        sd = torch.exp(p["scales"]).repeat(r, 1)
        big = {k: v.repeat(r, *([1] * (v.dim() - 1))) for k, v in p.items()}
        big["means"] = big["means"] + torch.randn(big["means"].shape, generator=g) * sd
        big["scales"] = big["scales"] - torch.log(torch.tensor(float(r))) / 3
        model.set_gaussians(big)
    scene = load_scene(SCENES / scene_name, downscale=int(ds))
    cam = scene.cameras[int(scene.split("test")[0])]
    out = {"case": case, "gaussians": model.num_gaussians,
           "view": f"{int(cam.width[0])}x{int(cam.height[0])}"}
    for name, backend in (("torch", "torch"), ("compiled", "auto"), ("torch", "torch"),
                          ("compiled", "auto")):
        model.config.render.backend = backend
        t0 = time.perf_counter()
        model.render(cam, torch.ones(3))
        out[name] = min(out.get(name, 1e9), time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", nargs="*", default=[])
    ap.add_argument("--render-case", nargs="*", default=[],
                    help="SCENE_NAME:DOWNSCALE:RUN:REPLICAS, no-grad renders of a large file")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--baseline-source", type=Path,
                    help="an earlier splat_blend.cpp, timed as a third path")
    ap.add_argument("--baseline-cflags", default="-O3",
                    help="its compiler flags, space-separated")
    ap.add_argument("--torch-projection", action="store_true",
                    help="also time the compiled blending with the torch projection")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    ok, reason = cpu_blend_status()
    if not ok:
        raise SystemExit(f"the compiled blending is not available: {reason}")
    baseline = (build_baseline(args.baseline_source, args.baseline_cflags.split())
                if args.baseline_source else None)
    rows = [bench(c, args.steps, args.rounds, baseline, args.torch_projection)
            for c in args.case]
    renders = [render_bench(c) for c in args.render_case]
    for r in rows:
        steps = " -> ".join(f"{k} {v:.3f}" for k, v in r["step_s"].items())
        raster = " -> ".join(f"{k} {sum(v.values()):.3f}" for k, v in r["raster"].items())
        proj = " -> ".join(f"{k} {v:.4f}" for k, v in r["projection_s"].items())
        print(f"{r['case']}: {r['gaussians']:,} Gaussians, {r['view']}, step s: {steps} "
              f"({r['speedup']:.2f}x over torch); render fwd+bwd s: {raster}; "
              f"projection fwd+bwd s: {proj}")
    for r in renders:
        print(f"{r['case']}: {r['gaussians']:,} Gaussians, {r['view']}, no-grad render "
              f"{r['torch']:.2f} -> {r['compiled']:.2f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"),
                                        "machine": platform.machine(),
                                        "threads": torch.get_num_threads(),
                                        "torch": torch.__version__,
                                        "baseline": str(args.baseline_source or ""),
                                        "baseline_cflags": args.baseline_cflags, "rows": rows,
                                        "renders": renders}, indent=1))


if __name__ == "__main__":
    main()
