"""A splat teacher and a field student of a distorted capture, scored on the same images.

Splats project through pinholes only, so they are judged against undistorted (resampled)
copies of the photos; a field renders the lens and is judged against the photos as shot. This
scores the student both ways, and the student against the teacher on the undistorted cameras
(pixel for pixel) and, as the report did before 2026-12-07, across the two camera models.

    python apps/eval_same_photos.py TEACHER_RUN STUDENT_RUN [--views 20] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fieldkit.data.scene import composite, load_scene
from fieldkit.data.undistort import undistort_scene
from fieldkit.distill.report import WHITE, _render, spaced_test_views
from fieldkit.train.metrics import psnr
from fieldkit.train.run import load_model, read_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("teacher", type=Path)
    ap.add_argument("student", type=Path)
    ap.add_argument("--views", type=int, default=20, help="evenly spaced test views")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    cfg = read_config(args.teacher)
    raw = load_scene(cfg["scene"], downscale=cfg["downscale"])
    und = undistort_scene(raw)
    pick = spaced_test_views(raw, args.views)
    teacher, student = load_model(args.teacher).eval(), load_model(args.student).eval()
    rows = []
    with torch.no_grad():
        for i in pick:
            photo, flat = composite(raw.image(i), WHITE), composite(und.image(i), WHITE)
            t = _render(teacher, und.cameras[i])[0]
            s_flat = _render(student, und.cameras[i])[0]
            s_lens = _render(student, raw.cameras[i])[0]
            rows.append({"view": i, "teacher_undistorted": psnr(t, flat),
                         "student_undistorted": psnr(s_flat, flat),
                         "student_as_shot": psnr(s_lens, photo),
                         "student_vs_teacher_same_pixels": psnr(s_flat, t),
                         "student_vs_teacher_across_models": psnr(s_lens, t)})
    mean = {k: sum(float(r[k]) for r in rows) / len(rows) for k in rows[0] if k != "view"}
    out = {"teacher": str(args.teacher), "student": str(args.student), "views": len(rows),
           "mean": mean, "per_view": [{k: float(v) for k, v in r.items()} for r in rows]}
    print(json.dumps(mean, indent=1))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
