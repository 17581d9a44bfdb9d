"""Benchmark: hash-grid NeRF on lego-400 at --downscale 2 (200x200), white background,
a wall-clock training budget, then PSNR/SSIM on all 200 test views.

    .venv/bin/python apps/bench_train_lego.py --max-time 300 --out apps/results/lego_cpu

Writes OUT/bench.json and OUT/bench.md (steps, rays/s, samples/s, peak memory, a profile of
where the step time goes, test PSNR/SSIM), and keeps the run in OUT/run (not committed).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import time
from pathlib import Path

import torch

from fieldkit.train.config import TrainConfig
from fieldkit.train.evaluate import evaluate_run
from fieldkit.train.run import prepare

SCENE = Path(__file__).resolve().parents[1].parent / "shared" / "scenes" / "lego-400"


def profile_steps(trainer, n: int = 5) -> list[tuple[str, float]]:
    """Top operators by self CPU time over ``n`` training steps."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            trainer.step()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1
    return [(e.key, 100.0 * e.self_cpu_time_total / total) for e in rows[:12]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-time", type=float, default=300.0)
    ap.add_argument("--downscale", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("apps/results/lego_cpu"))
    ap.add_argument("--test-every", type=int, default=1, help="evaluate every k-th test view")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    run_dir = args.out / "run"
    config = TrainConfig(max_time=args.max_time, background="white", eval_every=0,
                         checkpoint_every=1e9)
    trainer = prepare(SCENE, "hashgrid", run_dir, config, downscale=args.downscale)
    wall0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - wall0
    log = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines() if x]
    rays = sum(r["rays"] for r in log) * config.log_every
    samples = sum(r["samples"] for r in log) * config.log_every
    profile = profile_steps(trainer)

    scene = trainer.scene
    scene.splits["test"] = scene.splits["test"][::args.test_every]
    t0 = time.perf_counter()
    metrics = evaluate_run(run_dir, scene=scene, model=trainer.model)
    eval_s = time.perf_counter() - t0
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
                   f"{torch.__version__}, {platform.processor() or 'cpu'}",
        "command": f"python apps/bench_train_lego.py --max-time {args.max_time:g} "
                   f"--downscale {args.downscale} --out {args.out}",
        "resolution": metrics["resolution"], "train_seconds": trainer.elapsed,
        "wall_seconds_training": wall, "steps": trainer.step_count,
        "rays_per_s": rays / trainer.elapsed, "samples_per_s": samples / trainer.elapsed,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "test_psnr": metrics["psnr"], "test_ssim": metrics["ssim"],
        "test_views": metrics["num_views"], "eval_seconds": eval_s,
        "profile_top_ops_percent": profile,
    }
    (args.out / "bench.json").write_text(json.dumps(result, indent=2))
    lines = [f"# lego-400 hash-grid NeRF, {result['resolution']}, {args.max_time:g} s budget",
             "", f"- date: {result['date']}", f"- machine: {result['machine']}",
             f"- command: `{result['command']}`", "",
             "| metric | value |", "|---|---|"]
    for key in ("steps", "train_seconds", "wall_seconds_training", "rays_per_s", "samples_per_s",
                "peak_rss_mib", "test_psnr", "test_ssim", "test_views", "eval_seconds"):
        v = result[key]
        lines.append(f"| {key} | {v:.4g} |" if isinstance(v, float) else f"| {key} | {v} |")
    lines += ["", "Where step time goes (self CPU time, torch.profiler, 5 steps):", "",
              "| op | % |", "|---|---|"] + [f"| {k} | {p:.1f} |" for k, p in profile]
    (args.out / "bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
