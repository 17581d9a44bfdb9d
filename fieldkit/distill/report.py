"""The fidelity report of a distillation: RUN/distill.json and a printed table.

- student vs teacher on held-out novel views (never trained on), over white;
- student vs the photos and teacher vs the photos on evenly spaced test views, when the teacher's
  scene is on disk. Both are judged against the same images, so that the two scores compare and
  the student-vs-teacher PSNR there compares renders of the same pixels: the undistorted photos
  (pinhole cameras) when either model projects through pinholes only (splats) and the photos
  are distorted, else the photos as shot;
- time taken, parameters, bytes on disk and render time per frame of both models.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from fieldkit.data.scene import Scene, composite
from fieldkit.distill.targets import TeacherViews
from fieldkit.progress import progress_iter
from fieldkit.train.metrics import psnr, ssim
from fieldkit.train.rays import BACKGROUNDS

WHITE = torch.tensor(BACKGROUNDS["white"])


def _render(model, camera) -> tuple[torch.Tensor, float]:
    """rgb [H, W, 3] over white (CPU) and the seconds it took."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    rgb = model.render(camera.to(device), WHITE.to(device))["rgb"].cpu()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return rgb.clamp(0, 1), time.perf_counter() - t0


def versus_teacher(student, views: TeacherViews) -> dict:
    """Student renders of the held-out teacher views against the teacher's renders."""
    scene = views.scene
    idx = scene.split("val").tolist()
    scores, secs = [], []
    for i in progress_iter(idx, total=len(idx), desc="student vs teacher"):
        rgb, dt = _render(student, scene.cameras[i])
        target = composite(scene.image(i), WHITE)
        scores.append((psnr(rgb, target), ssim(rgb, target)))
        secs.append(dt)
    return {"psnr": float(np.mean([s[0] for s in scores])),
            "ssim": float(np.mean([s[1] for s in scores])), "views": len(idx),
            "student_seconds_per_frame": float(np.median(secs))}


def spaced_test_views(scene: Scene, n: int) -> list[int]:
    """``n`` evenly spaced test views of ``scene`` (all of them when it has fewer)."""
    test = scene.split("test")
    return test[torch.linspace(0, len(test) - 1, min(n, len(test))).round().long()].tolist()


def versus_photos(models: dict[str, torch.nn.Module], scene: Scene, n: int) -> dict:
    """PSNR/SSIM of each model on ``n`` evenly spaced test views of ``scene``, the render time
    per frame, and student-vs-teacher PSNR on the same views."""
    pick = spaced_test_views(scene, n)
    out: dict = {"views": len(pick)}
    renders: dict[str, list] = {}
    for name, model in models.items():
        scores, secs, imgs = [], [], []
        for i in progress_iter(pick, total=len(pick), desc=f"{name} vs photos"):
            rgb, dt = _render(model, scene.cameras[i])
            target = composite(scene.image(i), WHITE)
            scores.append((psnr(rgb, target), ssim(rgb, target)))
            secs.append(dt)
            imgs.append(rgb)
        renders[name] = imgs
        out[name] = {"psnr": float(np.mean([s[0] for s in scores])),
                     "ssim": float(np.mean([s[1] for s in scores])),
                     "seconds_per_frame": float(np.median(secs))}
    if {"student", "teacher"} <= set(renders):
        out["student_vs_teacher_psnr"] = float(np.mean(
            [psnr(s, t) for s, t in zip(renders["student"], renders["teacher"])]))
    return out


def model_facts(model, path: Path) -> dict:
    """Kind, parameters and size of ``model``, saved in the file ``path``."""
    path = Path(path)
    return {"kind": model.kind, "num_params": int(model.num_params),
            "bytes_on_disk": path.stat().st_size if path.is_file() else None}


def print_report(report: dict) -> None:
    """A readable table of ``report`` (stdout)."""
    from rich.console import Console
    from rich.table import Table

    t, s = report["teacher"], report["student"]
    table = Table(title=f"distilled {t['kind']} -> {s['kind']}  ({report['student_run']})")
    table.add_column("")
    table.add_column("teacher", justify="right")
    table.add_column("student", justify="right")
    vt = report["vs_teacher"]
    table.add_row(f"PSNR vs teacher ({vt['views']} held-out views)", "",
                  f"{vt['psnr']:.2f} dB")
    gt = report.get("vs_photos")
    if gt:
        which = "" if gt.get("photos", "as shot") == "as shot" else f", {gt['photos']}"
        table.add_row(f"PSNR vs photos ({gt['views']} test views{which})",
                      f"{gt['teacher']['psnr']:.2f} dB", f"{gt['student']['psnr']:.2f} dB")
        table.add_row("SSIM vs photos", f"{gt['teacher']['ssim']:.3f}",
                      f"{gt['student']['ssim']:.3f}")
        table.add_row("render time per frame", f"{gt['teacher']['seconds_per_frame']:.3f} s",
                      f"{gt['student']['seconds_per_frame']:.3f} s")
    else:
        table.add_row("render time per frame", f"{report['teacher_seconds_per_frame']:.3f} s",
                      f"{vt['student_seconds_per_frame']:.3f} s")
    table.add_row("parameters", f"{t['num_params']:,}", f"{s['num_params']:,}")
    mb = lambda b: "" if b is None else f"{b / 2**20:.2f} MiB"  # noqa: E731
    table.add_row("bytes on disk", mb(t["bytes_on_disk"]), mb(s["bytes_on_disk"]))
    tm = report["time"]
    trained = t.get("train_seconds")
    table.add_row("time", "unknown" if trained is None else f"{trained:.0f} s (training)",
                  f"{tm['distill_seconds']:.0f} s ({tm['teacher_seconds']:.0f} s teacher "
                  f"renders, {tm['student_seconds']:.0f} s optimisation; "
                  f"{tm['total_seconds'] - tm['distill_seconds']:.0f} s evaluation)")
    Console().print(table)
    if report.get("crop"):
        box = " ".join(f"{v:g}" for v in report["crop"])
        frame = "the file's own coordinates" if report.get("crop_in") == "file" else \
            "box coordinates"
        print(f"both cropped to the box {box} ({frame}); the photos show the whole scene")
