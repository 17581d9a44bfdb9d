"""Benchmark: one hash-grid training step on lego 200x200, eager vs torch.compile of the field.

Trains ``--steps`` steps from scratch with the default config (2^14 samples per step) and
prints the time of the first 5 steps (where compilation happens) and the median of the last 50.
``--compile`` wraps ``RadianceField.forward`` and ``.density`` in ``torch.compile(dynamic=True)``.
``--compile-inference`` compiles only the hash grid's no-grad forward
(``hashgrid_fast.compile_for_inference``): the density pre-pass that prunes samples before the
pass with gradients, and the occupancy-grid refresh.

    .venv/bin/python apps/bench_train_step.py --steps 300
    .venv/bin/python apps/bench_train_step.py --steps 300 --compile
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fieldkit.data.scene import load_scene
from fieldkit.fields.registry import build_model
from fieldkit.train.config import TrainConfig
from fieldkit.train.trainer import Trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scene", default=str(Path(__file__).resolve().parents[1].parent / "shared"
                                          / "scenes" / "lego-400"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--compile-inference", action="store_true")
    args = p.parse_args()
    os.environ.setdefault("FIELDKIT_QUIET", "1")
    scene = load_scene(args.scene, downscale=2)
    torch.manual_seed(0)
    model = build_model("hashgrid", scene.normalisation.bound)
    if args.compile:
        model.field.forward = torch.compile(model.field.forward, dynamic=True)
        model.field.density = torch.compile(model.field.density, dynamic=True)
    if args.compile_inference:
        from fieldkit.encoders.hashgrid_fast import compile_for_inference

        t0 = time.perf_counter()
        compile_for_inference(model)
        print(f"compile_for_inference: {time.perf_counter() - t0:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(scene, model, TrainConfig(max_steps=args.steps, eval_every=0), tmp)
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            stats = trainer.step()
            times.append(time.perf_counter() - t0)
    mode = ("compiled" if args.compile else
            "compiled inference" if args.compile_inference else "eager")
    print(f"{mode}: first 5 steps {sum(times[:5]):.1f} s, "
          f"median of the last 50 {statistics.median(times[-50:]):.3f} s, "
          f"last batch {stats['rays']} rays / {stats['samples']} samples, "
          f"train PSNR {stats['psnr']:.2f}")


if __name__ == "__main__":
    main()
