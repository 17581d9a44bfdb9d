"""Benchmark: ``--pose-opt`` (camera pose refinement) with and without, in two settings.

``turned``: the demo scene with its training poses turned and moved by known amounts (seeded;
``--rot`` degrees and ``--trans`` box units, rms), so that what the refinement recovers is
measured against the true poses; held-out views keep their true poses. Also run with
``--rot 0 --trans 0``: what refinement costs when the poses are exact.

``real``: real captures as given (COLMAP or instant-ngp poses), a wall-clock budget each,
PSNR/SSIM on every test view.

    .venv/bin/python apps/bench_pose_opt.py turned --models triplane splat --steps 600 \\
        --out apps/results/pose_opt_cpu/turned.jsonl
    .venv/bin/python apps/bench_pose_opt.py real --scenes fox beer-colmap --models triplane \\
        --max-time 150 --downscale 8 --out apps/results/pose_opt_cpu/real.jsonl

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
from fieldkit.train.config import TrainConfig
from fieldkit.train.evaluate import evaluate_run
from fieldkit.train.metrics import psnr
from fieldkit.train.pose_opt import pose_errors, turn_poses
from fieldkit.train.run import prepare, scene_for_model, scene_trainer

REPO = Path(__file__).resolve().parents[1]
SCENES = REPO.parent / "shared" / "scenes"


def turned(args, kind: str, pose_opt: bool, work: Path) -> dict:
    scene = scene_for_model(load_scene(REPO / "scenes" / "demo", downscale=2), kind)
    truth = scene.cameras.c2w.clone()
    views = scene.split("train")
    scene.cameras.c2w = turn_poses(truth, views, args.rot, args.trans)
    cfg = TrainConfig(max_steps=args.steps, eval_every=0, checkpoint_every=1e9,
                      pose_opt=pose_opt, pose_start=args.pose_start, background="random",
                      seed=args.seed)
    trainer = scene_trainer(scene, kind, cfg, work / f"{kind}_{pose_opt}")
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    refined = trainer.poses.train_cameras().c2w if trainer.poses else scene.cameras.c2w[views]
    rot0, pos0 = pose_errors(scene.cameras.c2w[views], truth[views])
    rot1, pos1 = pose_errors(refined, truth[views])
    white = torch.ones(3)
    scores = [psnr(trainer.render(scene.cameras[int(i)], "white")["rgb"],
                   composite(scene.image(int(i)), white)) for i in scene.split("test")]
    return {"setting": "turned", "model": kind, "pose_opt": pose_opt,
            "pose_start": trainer.poses.start if pose_opt else None, "seed": args.seed,
            "steps": args.steps,
            "rot_deg": args.rot, "trans": args.trans, "seconds": round(seconds, 1),
            "test_psnr": round(float(np.mean(scores)), 3),
            "rot_err_deg": [round(float(rot0.mean()), 4), round(float(rot1.mean()), 4)],
            "pos_err": [round(float(pos0.mean()), 5), round(float(pos1.mean()), 5)]}


def real(args, scene_name: str, kind: str, pose_opt: bool, work: Path) -> dict:
    cfg = TrainConfig(max_time=args.max_time, eval_every=0, pose_opt=pose_opt,
                      pose_start=args.pose_start)
    run = work / f"{scene_name}_{kind}_{pose_opt}"
    trainer = prepare(SCENES / scene_name, kind, run, cfg, downscale=args.downscale)
    trainer.train()
    metrics = evaluate_run(run)
    poses = json.loads((run / "poses.json").read_text()) if pose_opt else {}
    return {"setting": "real", "scene": scene_name, "model": kind, "pose_opt": pose_opt,
            "pose_start": trainer.poses.start if pose_opt else None,
            "downscale": args.downscale, "max_time": args.max_time,
            "steps": trainer.step_count, "test_psnr": round(metrics["psnr"], 3),
            "test_ssim": round(metrics["ssim"], 4),
            "mean_rotation_deg": round(poses.get("mean_rotation_deg", 0.0), 4),
            "mean_translation": round(poses.get("mean_translation", 0.0), 5)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("setting", choices=["turned", "real"])
    p.add_argument("--models", nargs="+", default=["triplane"])
    p.add_argument("--scenes", nargs="+", default=["fox", "beer-colmap"])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--rot", type=float, default=2.0)
    p.add_argument("--trans", type=float, default=0.05)
    p.add_argument("--max-time", type=float, default=150.0)
    p.add_argument("--downscale", type=int, default=8)
    p.add_argument("--pose-start", type=float, default=None,
                   help="fraction of the budget before the poses learn (default: the model's)")
    p.add_argument("--seed", type=int, default=0, help="training seed (turned)")
    p.add_argument("--only-with", action="store_true",
                   help="skip the runs without --pose-opt (already measured)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    os.environ.setdefault("FIELDKIT_QUIET", "1")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    stamp = {"date": datetime.date.today().isoformat(), "machine": platform.machine(),
             "threads": torch.get_num_threads(), "torch": torch.__version__}
    work = Path(tempfile.mkdtemp(prefix="pose_opt_"))
    try:
        jobs = ([(s, k) for s in args.scenes for k in args.models] if args.setting == "real"
                else [(None, k) for k in args.models])
        for scene_name, kind in jobs:
            for pose_opt in ((True,) if args.only_with else (False, True)):
                row = (real(args, scene_name, kind, pose_opt, work) if scene_name
                       else turned(args, kind, pose_opt, work))
                print(json.dumps(row), flush=True)
                with open(args.out, "a") as f:
                    f.write(json.dumps({**row, **stamp}) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
