"""Where in the image a student falls short of its teacher: PSNR at the views' edges and middles.

    .venv/bin/python apps/border_psnr.py --teacher runs/fox_hash --students RUN [RUN ...] \\
        --out apps/results/NAME/border.json

Renders ``--views`` of the teacher's training cameras (evenly spaced) with the teacher and
each student (over black), and scores each student against the teacher on two parts of every
view: the band of ``--band`` of each side along the edges, and the rest. A student trained on
windows of its views (``--splat.step-pixels``) that draws the views' edges less often than
their middles shows it here first.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from fieldkit.distill.teacher import Teacher
from fieldkit.distill.views import train_cameras
from fieldkit.train.run import load_model, read_config

from stamp import stamp


def band_mask(height: int, width: int, band: float) -> torch.Tensor:
    """[H, W] bool: True within ``band`` of each side of the edges."""
    mask = torch.ones(height, width, dtype=torch.bool)
    dy, dx = int(height * band), int(width * band)
    mask[dy:height - dy, dx:width - dx] = False
    return mask


def edge_and_middle(teacher_run: Path, student_runs: list[Path], views: int = 4,
                    band: float = 1 / 6) -> dict[str, dict[str, float]]:
    """{student run: {"edge": PSNR, "middle": PSNR, "all": PSNR}} against the teacher."""
    teacher = Teacher(load_model(teacher_run))
    students = [load_model(r).eval() for r in student_runs]
    for s in students:
        if hasattr(s, "active_sh_degree"):
            s.active_sh_degree = s.config.sh_degree
    cams, _ = train_cameras(teacher_run, read_config(teacher_run))
    picks = torch.linspace(0, len(cams) - 1, views).round().long().tolist()
    sums = {str(r): {"edge": 0.0, "middle": 0.0, "all": 0.0} for r in student_runs}
    black = torch.zeros(3)
    for i in picks:
        target = teacher.render_view(cams[i])["rgb"].clamp(0, 1)
        edge = band_mask(*target.shape[:2], band)
        for run, model in zip(student_runs, students):
            with torch.no_grad():
                rgb = model.render(cams[i], black)["rgb"].float().clamp(0, 1)
            err = ((rgb - target) ** 2).mean(-1)
            s = sums[str(run)]
            s["edge"] += float(err[edge].mean()) / len(picks)
            s["middle"] += float(err[~edge].mean()) / len(picks)
            s["all"] += float(err.mean()) / len(picks)
    return {run: {k: -10 * math.log10(max(v, 1e-10)) for k, v in s.items()}
            for run, s in sums.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", type=Path, required=True)
    p.add_argument("--students", type=Path, nargs="+", required=True)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--band", type=float, default=1 / 6)
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    rows = edge_and_middle(a.teacher, a.students, a.views, a.band)
    for run, r in rows.items():
        print(f"{run}: edge {r['edge']:.2f} dB, middle {r['middle']:.2f}, all {r['all']:.2f}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({**stamp(), "teacher": str(a.teacher), "views": a.views,
                                     "band": a.band, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
