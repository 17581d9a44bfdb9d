"""Benchmark: training steps on the CPU, before and after the tri-plane's closed-form
total-variation gradient (``fieldkit/encoders/plane_tv.py``) and the fused Adam
(``fieldkit/train/optim.py``).

Times, interleaved and as medians,
1. the penalty's forward + backward alone (autograd twin vs closed form), for the tri-plane
   trained from photos (4 channels) and the distillation student (8 channels), both at
   resolutions 32-256;
2. one Adam step over those parameters alone (foreach vs fused);
3. whole tri-plane training steps on lego-400 at 200x200 (``Trainer``, 2^14 samples a step)
   with 4 and 8 channels, three trainers stepping in turn: before (autograd TV, foreach Adam),
   closed-form TV with foreach Adam, closed-form TV with fused Adam; and hash-grid training
   steps with foreach and with fused Adam (``--train-steps``, 0 to skip).

    python apps/bench_step_cpu.py [--out apps/results/step_cpu.md]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fieldkit.encoders.plane_tv import plane_tv, plane_tv_reference
from fieldkit.encoders.triplane import TriPlane, TriPlaneConfig

from stamp import stamp

TV_VARIANTS = {"autograd twin": plane_tv_reference, "closed form": plane_tv}
STEP_VARIANTS = {"before": ("autograd twin", False), "closed-form TV": ("closed form", False),
                 "closed-form TV + fused Adam": ("closed form", True)}
"""Whole-step variants: (TV variant, fused Adam)."""


def _triplane(features: int) -> TriPlane:
    torch.manual_seed(0)
    return TriPlane(TriPlaneConfig(resolutions=(32, 64, 128, 256), features=features))


def time_penalty(features: int, reps: int) -> dict[str, float]:
    """Median ms of forward + backward of each TV variant on one tri-plane (interleaved)."""
    tp = _triplane(features)
    planes = list(tp.planes)
    times: dict[str, list[float]] = {k: [] for k in TV_VARIANTS}
    for i in range(reps + 3):
        for name, fn in TV_VARIANTS.items():
            tp.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            (fn(planes) * 1e-4).backward()
            if i >= 3:
                times[name].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def time_adam(features: int, reps: int) -> dict[str, float]:
    """Median ms of one Adam step over a tri-plane's parameters, foreach vs fused."""
    tps = {k: _triplane(features) for k in ("foreach", "fused")}
    opts = {k: torch.optim.Adam(tp.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-15,
                                **{k: True}) for k, tp in tps.items()}
    times: dict[str, list[float]] = {k: [] for k in tps}
    for i in range(reps + 3):
        for k, tp in tps.items():
            for p in tp.parameters():
                p.grad = torch.randn_like(p)
            t0 = time.perf_counter()
            opts[k].step()
            if i >= 3:
                times[k].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def time_training(scene, kind: str, overrides: dict, variants: dict,
                  steps: int) -> dict[str, float]:
    """Median ms of the last half of ``steps`` training steps of a ``kind`` model (its default
    preset with ``overrides``), per entry of ``variants`` (name: (TV variant, fused Adam));
    the trainers step in turn so that all see the same machine."""
    from fieldkit.encoders import triplane as triplane_module
    from fieldkit.fields.registry import build_model, merge, preset_config
    from fieldkit.train.config import TrainConfig
    from fieldkit.train.trainer import Trainer

    config = merge(preset_config(kind, "default"), overrides)
    trainers, times = {}, {k: [] for k in variants}
    tmp = tempfile.TemporaryDirectory()
    for name, (_, fused) in variants.items():
        torch.manual_seed(0)
        model = build_model(kind, scene.normalisation.bound, config=config)
        trainer = Trainer(scene, model, TrainConfig(max_steps=steps, eval_every=0),
                          Path(tmp.name) / str(len(trainers)))
        if not fused:   # torch's default Adam (foreach), as before fieldkit/train/optim.py
            trainer.optimizer = torch.optim.Adam(model.param_groups(trainer.lr), lr=trainer.lr,
                                                 betas=(0.9, 0.99), eps=1e-15)
        trainers[name] = trainer
    original = triplane_module.plane_tv
    try:
        for _ in range(steps):
            for name, trainer in trainers.items():
                triplane_module.plane_tv = TV_VARIANTS[variants[name][0]]
                t0 = time.perf_counter()
                trainer.step()
                times[name].append(time.perf_counter() - t0)
    finally:
        triplane_module.plane_tv = original
        tmp.cleanup()
    return {k: 1e3 * statistics.median(v[steps // 2:]) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--train-steps", type=int, default=200)
    ap.add_argument("--scene", type=Path, default=Path(__file__).resolve().parents[2]
                    / "shared" / "scenes" / "lego-400")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("FIELDKIT_QUIET", "1")
    meta = stamp()
    lines = [
        "# Training steps on the CPU: the tri-plane's closed-form TV gradient, fused Adam", "",
        f"- date: {meta['date']}",
        f"- machine: {meta['machine']}",
        f"- command: `{meta['command']}`",
        "- medians, variants interleaved", "",
        "| what | before | after | speed-up |", "|---|---|---|---|"]
    for features in (4, 8):
        t = time_penalty(features, args.reps)
        a, b = t["autograd twin"], t["closed form"]
        lines.append(f"| TV penalty fwd + bwd, {features} channels (autograd twin -> closed "
                     f"form) | {a:.1f} ms | {b:.1f} ms | {a / b:.2f}x |")
        print(lines[-1], flush=True)
        t = time_adam(features, args.reps)
        a, b = t["foreach"], t["fused"]
        lines.append(f"| Adam step alone, {features} channels (foreach -> fused) | {a:.1f} ms | "
                     f"{b:.1f} ms | {a / b:.2f}x |")
        print(lines[-1], flush=True)
    if args.train_steps and args.scene.is_dir():
        from fieldkit.data.scene import load_scene

        scene = load_scene(args.scene, downscale=2)
        lines += ["", f"Whole training steps, lego-400 at 200 px, 2^14 samples a step; median "
                  f"of the last {args.train_steps // 2} of {args.train_steps} steps:", "",
                  "| tri-plane channels | " + " | ".join(STEP_VARIANTS) + " | speed-up |",
                  "|---|" + "---|" * (len(STEP_VARIANTS) + 1)]
        for features in (4, 8):
            t = time_training(scene, "triplane", {"encoder": {"features": features}},
                              STEP_VARIANTS, args.train_steps)
            first, last = t["before"], t[list(STEP_VARIANTS)[-1]]
            lines.append(f"| {features} | " + " | ".join(f"{v:.1f} ms" for v in t.values())
                         + f" | {first / last:.2f}x |")
            print(lines[-1], flush=True)
        hash_variants = {"foreach Adam": ("closed form", False),
                         "fused Adam": ("closed form", True)}
        t = time_training(scene, "hashgrid", {}, hash_variants, args.train_steps)
        a, b = t.values()
        lines += ["", "| hash grid (default) | foreach Adam | fused Adam | speed-up |",
                  "|---|---|---|---|", f"| training step | {a:.1f} ms | {b:.1f} ms | "
                  f"{a / b:.2f}x |"]
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
