"""Benchmark: render time of a trained run, per test view and for an orbit video.

    .venv/bin/python apps/bench_render.py --run apps/results/compare_lego-400/hashgrid/run \
        --frames 120 --out apps/results/render_lego_cpu.md

Renders every ``--test-every``-th test view (time per view and PSNR on white), then an orbit
video of ``--frames`` frames at the run's resolution through `fieldkit render` (wall time of the
whole command: loading, rendering, encoding). Target (issue 8): a 120-frame 200x200 orbit of a
hash-grid model in under 2 minutes on CPU. Several runs may be given.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from fieldkit.data.scene import composite
from fieldkit.export.render import render_video
from fieldkit.train.metrics import psnr
from fieldkit.train.run import load_model, load_run_scene

from stamp import stamp


def bench(run: Path, frames: int, test_every: int) -> dict:
    model, scene = load_model(run), load_run_scene(run)
    model.eval()
    bg = torch.ones(3)
    views = scene.split("test")[::test_every].tolist()
    t0 = time.perf_counter()
    scores = [psnr(model.render(scene.cameras[i], bg)["rgb"], composite(scene.image(i), bg))
              for i in views]
    per_view = (time.perf_counter() - t0) / len(views)
    with TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        render_video(run, Path(tmp) / "orbit.mp4", frames=frames)
        video = time.perf_counter() - t0
    w, h = int(scene.cameras.width[views[0]]), int(scene.cameras.height[views[0]])
    return {"run": str(run), "kind": model.kind, "size": f"{w}x{h}", "views": len(views),
            "per_view_s": per_view, "psnr": sum(scores) / len(scores), "frames": frames,
            "video_s": video}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, nargs="+",
                    default=[Path("apps/results/compare_lego-400/hashgrid/run")])
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--test-every", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("apps/results/render_lego_cpu.md"))
    args = ap.parse_args()
    rows = [bench(r, args.frames, args.test_every) for r in args.run]
    meta = stamp()
    lines = ["# Render time of trained runs", "", f"- date: {meta['date']}",
             f"- machine: {meta['machine']}", f"- command: `{meta['command']}`",
             "- video: wall time of `fieldkit render RUN --frames N` (load, render, encode mp4)",
             "", "| run | model | size | s per test view | test PSNR (views) | video frames | "
             "video s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['kind']} | {r['size']} | {r['per_view_s']:.2f} | "
                     f"{r['psnr']:.2f} ({r['views']}) | {r['frames']} | {r['video_s']:.0f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
