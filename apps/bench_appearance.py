"""Benchmark: ``--appearance affine|bilateral`` (per-photo colour transforms) against none.

``varied``: the demo scene with known appearance changes in its training photos (seeded:
``vary_exposure``, each colour channel times exp(N(0, --strength)) and a brightness tilt
across the photo, both centred over the photos), held-out photos unchanged; the score is PSNR
on them, so what the transforms take out of the scene is measured against the truth.
``--strength 0``: what the option costs on consistent photos.

``real``: real captures as given, a wall-clock budget each, PSNR, colour-corrected PSNR and
SSIM on every test view.

    .venv/bin/python apps/bench_appearance.py varied --models triplane splat --steps 600 \\
        --out apps/results/appearance_cpu/varied.jsonl
    .venv/bin/python apps/bench_appearance.py real --scenes fox beer-colmap --models triplane \\
        --max-time 150 --downscale 8 --out apps/results/appearance_cpu/real.jsonl

Appends one JSON line per run to ``--out``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fieldkit.data.scene import composite, load_scene
from fieldkit.train.appearance import vary_exposure
from fieldkit.train.config import TrainConfig
from fieldkit.train.evaluate import evaluate_run
from fieldkit.train.metrics import psnr
from fieldkit.train.run import prepare, scene_for_model, scene_trainer

REPO = Path(__file__).resolve().parents[1]
SCENES = REPO.parent / "shared" / "scenes"


def varied(args, kind: str, appearance: str, work: Path) -> dict:
    scene = scene_for_model(load_scene(REPO / "scenes" / "demo", downscale=2), kind)
    clean = scene
    scene = vary_exposure(scene, scene.split("train"), args.strength, args.tilt)
    cfg = TrainConfig(max_steps=args.steps, eval_every=0, checkpoint_every=1e9,
                      appearance=appearance, background="random")
    trainer = scene_trainer(scene, kind, cfg, work / f"{kind}_{appearance}")
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    white = torch.ones(3)
    pairs = [(trainer.render(clean.cameras[int(i)], "white")["rgb"],
              composite(clean.image(int(i)), white)) for i in clean.split("test")]
    return {"setting": "varied", "model": kind, "appearance": appearance, "steps": args.steps,
            "strength": args.strength, "tilt": args.tilt, "seconds": round(seconds, 1),
            "test_psnr": round(float(np.mean([psnr(a, b) for a, b in pairs])), 3),
            **{k: round(v, 4) for k, v in trainer.refiner_stats().items()}}


def real(args, scene_name: str, kind: str, appearance: str, work: Path) -> dict:
    cfg = TrainConfig(max_time=args.max_time, eval_every=0, appearance=appearance)
    run = work / f"{scene_name}_{kind}_{appearance}"
    trainer = prepare(SCENES / scene_name, kind, run, cfg, downscale=args.downscale)
    trainer.train()
    metrics = evaluate_run(run)
    return {"setting": "real", "scene": scene_name, "model": kind, "appearance": appearance,
            "downscale": args.downscale, "max_time": args.max_time,
            "steps": trainer.step_count, "test_psnr": round(metrics["psnr"], 3),
            "test_psnr_cc": round(metrics["psnr_cc"], 3), "test_ssim": round(metrics["ssim"], 4),
            **{k: round(v, 4) for k, v in trainer.refiner_stats().items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("setting", choices=["varied", "real"])
    p.add_argument("--models", nargs="+", default=["triplane"])
    p.add_argument("--kinds", nargs="+", default=["off", "affine", "bilateral"])
    p.add_argument("--scenes", nargs="+", default=["fox", "beer-colmap"])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--strength", type=float, default=0.2)
    p.add_argument("--tilt", type=float, default=None, help="default: --strength")
    p.add_argument("--max-time", type=float, default=150.0)
    p.add_argument("--downscale", type=int, default=8)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    os.environ.setdefault("FIELDKIT_QUIET", "1")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    stamp = {"date": datetime.date.today().isoformat(), "machine": platform.machine(),
             "threads": torch.get_num_threads(), "torch": torch.__version__}
    work = Path(tempfile.mkdtemp(prefix="appearance_"))
    try:
        jobs = ([(s, k) for s in args.scenes for k in args.models] if args.setting == "real"
                else [(None, k) for k in args.models])
        for scene_name, kind in jobs:
            for appearance in args.kinds:
                row = (real(args, scene_name, kind, appearance, work) if scene_name
                       else varied(args, kind, appearance, work))
                print(json.dumps(row), flush=True)
                with open(args.out, "a") as f:
                    f.write(json.dumps({**row, **stamp}) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
