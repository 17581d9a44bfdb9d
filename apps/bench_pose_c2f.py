"""Experiment, not a fieldkit feature: a coarse-to-fine window over the hash grid's levels
(BARF's) while ``--pose-opt`` refines the cameras, on the demo scene with turned or exact
poses (``apps/bench_pose_opt.py turned``'s setting).

Level ``l`` of ``L`` is weighted by ``(1 - cos(pi * clamp(a - l, 0, 1))) / 2``, where ``a``
grows from ``--first`` to ``L`` over the first ``--end`` of the budget; held-out renders use
every level. The window is patched onto ``HashGrid.forward`` for this process only.

    .venv/bin/python apps/bench_pose_c2f.py [--rot 0 --trans 0] [--seed S] \\
        --out apps/results/pose_opt_cpu/c2f.jsonl
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_pose_opt  # noqa: E402

from fieldkit.encoders.hashgrid import HashGrid  # noqa: E402
from fieldkit.train.trainer import Trainer  # noqa: E402

PROGRESS = {"now": 1.0}
"""The training progress the window follows (1.0 outside training steps: every level)."""


def patch(first: float, end: float) -> None:
    forward, start_step, render = HashGrid.forward, Trainer._start_step, Trainer.render

    def windowed(self, x):
        out = forward(self, x)
        L, F = self.config.num_levels, self.config.features_per_level
        a = first + (L - first) * min(1.0, PROGRESS["now"] / end)
        k = torch.arange(L, dtype=out.dtype, device=out.device)
        w = (1 - torch.cos(torch.clamp(a - k, 0, 1) * math.pi)) / 2
        return out * w.repeat_interleave(F)

    def start(self):
        PROGRESS["now"] = self.progress()
        return start_step(self)

    def full_render(self, *args, **kwargs):
        PROGRESS["now"] = 1.0
        return render(self, *args, **kwargs)

    HashGrid.forward, Trainer._start_step, Trainer.render = windowed, start, full_render


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rot", type=float, default=2.0)
    p.add_argument("--trans", type=float, default=0.05)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--first", type=float, default=2.0, help="levels fully on at the start")
    p.add_argument("--end", type=float, default=0.5, help="fraction of the budget to all levels")
    p.add_argument("--no-pose-opt", action="store_true", help="the window alone")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    patch(a.first, a.end)
    args = argparse.Namespace(rot=a.rot, trans=a.trans, steps=a.steps, pose_start=0.0,
                              seed=a.seed)
    row = bench_pose_opt.turned(args, "hashgrid", not a.no_pose_opt, Path(tempfile.mkdtemp()))
    row.update(c2f_first=a.first, c2f_end=a.end)
    print(json.dumps(row), flush=True)
    with open(a.out, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
