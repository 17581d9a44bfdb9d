"""Benchmark (GPU): splats on lego-400 at 400x400 with gsplat's rasterizer; PSNR against time,
frames per second at 800x800 and the Gaussian count.

    python apps/bench_splat_gpu.py --max-time 120 --out apps/results/splat_lego_gpu.md

Issue 6's target: test PSNR >= 35 dB within 120 s on one H100. Trains with ``--device cuda``
(fails with one line when there is no CUDA device), evaluates every ``--eval-every`` seconds of
training on every ``--test-every``-th test view, then on all test views at the end, and times
rendering at 800x800 (the test cameras scaled 2x) with CUDA synchronisation. Written without a
GPU at hand; its first run on one is also its test.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path

import torch

from fieldkit.data.scene import composite
from fieldkit.train.config import TrainConfig
from fieldkit.train.evaluate import evaluate_run
from fieldkit.train.metrics import psnr
from fieldkit.train.run import prepare

from stamp import command

SCENES = Path(__file__).resolve().parents[1].parent / "shared" / "scenes"


def quick_psnr(trainer, views: list[int]) -> float:
    bg = torch.ones(3)
    return sum(psnr(trainer.render(trainer.scene.cameras[i], "white")["rgb"],
                    composite(trainer.scene.image(i), bg)) for i in views) / len(views)


def fps_at(trainer, views: list[int], size: int, repeats: int = 3) -> float:
    model, device = trainer.model, trainer.device
    model.eval()
    bg = torch.ones(3, device=device)
    cams = [trainer.scene.cameras[i] for i in views]
    cams = [c.resized(torch.tensor([size]), torch.tensor([size])).to(device) for c in cams]
    with torch.no_grad():
        model.render(cams[0], bg)  # warm-up (kernel builds, caches)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeats):
            for c in cams:
                model.render(c, bg)
        torch.cuda.synchronize()
    return repeats * len(cams) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scene", default="lego-400")
    ap.add_argument("--max-time", type=float, default=120.0)
    ap.add_argument("--downscale", type=int, default=1)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--eval-every", type=float, default=20.0)
    ap.add_argument("--test-every", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("apps/results/splat_lego_gpu.md"))
    args = ap.parse_args()
    run_dir = args.out.with_suffix("") / "run"
    config = TrainConfig(max_time=args.max_time, eval_every=0, checkpoint_every=1e9)
    trainer = prepare(SCENES / args.scene, "splat", run_dir, config, downscale=args.downscale,
                      device="cuda", preset=args.preset)
    test = trainer.scene.split("test").tolist()
    curve = []
    next_eval = args.eval_every
    while not trainer.done():
        trainer.step()
        if trainer.elapsed >= next_eval or trainer.done():
            curve.append((trainer.elapsed, trainer.step_count, trainer.model.num_gaussians,
                          quick_psnr(trainer, test[::args.test_every])))
            next_eval += args.eval_every
    trainer.save()
    metrics = evaluate_run(run_dir, scene=trainer.scene, model=trainer.model)
    fps = fps_at(trainer, test[:10], 800)
    lines = [f"# Splats on {args.scene} ({metrics['resolution']}) on the GPU", "",
             f"- date: {datetime.date.today().isoformat()}",
             f"- device: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
             f"{platform.machine()}", f"- command: `{command()}`", "",
             f"Final: test PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f} on "
             f"{metrics['num_views']} views; {trainer.model.num_gaussians:,} Gaussians; "
             f"{fps:.0f} FPS at 800x800.", "",
             "| train s | steps | Gaussians | PSNR (every "
             f"{args.test_every}th test view) |", "|---|---|---|---|"]
    lines += [f"| {t:.0f} | {s} | {n:,} | {p:.2f} |" for t, s, n, p in curve]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
