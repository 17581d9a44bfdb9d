"""Benchmark: rendering a hash-grid model on the CPU, before and after this session's changes.

1. The hash-grid forward without gradients (the rendering path), eager vs compiled
   (``hashgrid_fast.compile_for_inference``), on the demo model's layout (L=16, F=2, T=17),
   uniform points, at 2^15 and 2^17 points.
2. A 512 x 384 frame of a trained run (the viewer's refined frame, first training camera)
   with the empty-space skipping levels (``volume.SKIP_RADII``) and the encoder path varied.

Timed runs of all modes are interleaved (round robin) and medians reported, because this
machine's speed drifts by ~20% from minute to minute.

    OMP_NUM_THREADS=2 .venv/bin/python apps/bench_cpu_render.py --run /tmp/fkv120/demo-hashgrid
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "apps"))

from stamp import command, machine  # noqa: E402


def _interleaved(fns: dict, rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()   # warm-up
    for _ in range(rounds):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_encoder(rounds: int) -> list[str]:
    from fieldkit.encoders import hashgrid_fast
    from fieldkit.encoders.hashgrid import HashGrid, HashGridConfig

    grid = HashGrid(HashGridConfig(log2_table_size=17))   # the hashgrid model's default layout
    with torch.no_grad():
        grid.table.uniform_(-1e-2, 1e-2)
    t = time.perf_counter()
    hashgrid_fast.compile_for_inference(grid)
    compile_s = time.perf_counter() - t
    lines = [f"compile_for_inference: {compile_s:.1f} s (this process; inductor's disk cache "
             "was warm or cold, see the note)", "",
             "| points | eager | compiled | speed-up |", "|---|---|---|---|"]
    ready = hashgrid_fast._INFER_READY

    def run(x, compiled: bool):
        key = hashgrid_fast._layout(grid)
        saved = ready[key]
        ready[key] = compiled and saved
        try:
            with torch.no_grad():
                for part in x.split(1 << 15):   # the renderer's block size
                    grid(part)
        finally:
            ready[key] = saved

    for log2 in (15, 17):
        x = torch.rand(1 << log2, 3, generator=torch.Generator().manual_seed(log2))
        med = _interleaved({"eager": lambda: run(x, False), "compiled": lambda: run(x, True)},
                           rounds)
        lines.append(f"| 2^{log2} | {med['eager'] * 1e3:.1f} ms | {med['compiled'] * 1e3:.1f} ms "
                     f"| {med['eager'] / med['compiled']:.1f}x |")
    return lines


def _baseline_skipping(tree: Path):
    """``_coarse_steps`` of another checkout (e.g. a worktree of the previous commit)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("baseline_volume",
                                                  tree / "fieldkit" / "render" / "volume.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_volume"] = module
    spec.loader.exec_module(module)
    return module._coarse_steps


def bench_frame(run_dir: Path, rounds: int, baseline: Path | None) -> list[str]:
    import fieldkit.render.volume as volume
    from bench_viewer import frame_seconds
    from fieldkit.encoders import hashgrid_fast
    from fieldkit.viewer.camera import ViewCamera, cameras_to_view
    from fieldkit.viewer.sources import Source

    source = Source.from_run(run_dir)
    hashgrid_fast.wait_for_inference_compile()   # from_run compiles in the background
    view = cameras_to_view(source.cameras, 0)
    view = ViewCamera(view.wxyz, view.position, view.fov, 4 / 3)
    ready = hashgrid_fast._INFER_READY
    ours = volume._coarse_steps
    modes = {"one skipping level (r=1), eager": ((1,), False),
             "two levels (r=4, 1), eager": ((4, 1), False),
             "two levels (r=4, 1), compiled encoder": ((4, 1), True)}
    if baseline is not None:
        old = _baseline_skipping(baseline)
        modes = {f"skipping of {baseline.name} (pooled), eager": ("baseline", False), **modes}
    saved = dict(ready)

    def frame(radii, compiled, res):
        volume._coarse_steps = old if radii == "baseline" else ours
        volume.SKIP_RADII = (4, 1) if radii == "baseline" else radii
        for k in ready:
            ready[k] = compiled and saved[k]
        return frame_seconds(source, view, res)

    lines = ["| mode | 128 px | 512 px |", "|---|---|---|"]
    meds = {res: _interleaved({m: (lambda a=a, res=res: frame(*a, res)) for m, a in modes.items()},
                              rounds) for res in (128, 512)}
    for m in modes:
        lines.append(f"| {m} | {meds[128][m] * 1e3:.0f} ms | {meds[512][m] * 1e3:.0f} ms |")
    ready.update(saved)
    volume.SKIP_RADII, volume._coarse_steps = (4, 1), ours
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a trained hash-grid run")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--baseline", type=Path, default=None,
                    help="a checkout of an earlier commit whose empty-space skipping to compare")
    ap.add_argument("--out", type=Path, default=REPO / "apps" / "results" / "cpu_render.md")
    args = ap.parse_args()
    head = [f"- date: {time.strftime('%Y-%m-%d %H:%M')}",
            f"- machine: {machine()}, {platform.platform()}",
            f"- command: `OMP_NUM_THREADS={torch.get_num_threads()} {command()}`",
            f"- medians of {args.rounds} interleaved rounds", ""]
    enc = bench_encoder(args.rounds)
    print("\n".join(enc), flush=True)
    frame = bench_frame(args.run, args.rounds, args.baseline)
    print("\n".join(frame), flush=True)
    text = "\n".join(["# Hash-grid rendering on the CPU", ""] + head +
                     ["## Encoder forward without gradients", ""] + enc +
                     ["", f"## Viewer frame of {args.run.name} (first training camera, 4:3)", ""]
                     + frame) + "\n"
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
