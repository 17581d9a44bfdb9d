"""`fieldkit eval RUN`: PSNR, SSIM and colour-corrected PSNR on every test view, per view and
mean, into metrics.json."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fieldkit.data.scene import Scene, composite
from fieldkit.encoders.hashgrid_fast import compile_if_it_pays
from fieldkit.export.video import colorize_depth, to_uint8
from fieldkit.progress import progress_iter
from fieldkit.train.checkpoint import atomic_write_json
from fieldkit.train.metrics import psnr, psnr_cc, ssim
from fieldkit.train.rays import BACKGROUNDS
from fieldkit.train.run import load_model, load_run_scene, read_config


def evaluate_run(run_dir: Path, split: str = "test", save_renders: bool = True,
                 scene: Scene | None = None, model: torch.nn.Module | None = None) -> dict:
    """Render every view of ``split``; write RUN/metrics.json and RUN/renders/<split>/."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    scene = scene or load_run_scene(run_dir)
    model = model or load_model(run_dir)
    background = "white" if cfg["train"]["background"] == "random" else cfg["train"]["background"]
    return evaluate_model(model, scene, background, run_dir, split, save_renders)


def evaluate_file(path: Path, scene: Path | None = None, downscale: int = 1,
                  ply_transform: Path | None = None, out: Path | None = None,
                  split: str = "test") -> tuple[dict, Path]:
    """Evaluate a splat file of any trainer (or its folder) on the test photos of its
    dataset (``scene``, or the one its folder names; ``fieldkit/export/subject.py``), on a
    white background: (metrics, folder written: ``out``, default ``<name>-eval`` beside it,
    with metrics.json and renders/<split>/)."""
    from fieldkit.errors import FieldkitError
    from fieldkit.export.subject import open_subject
    from fieldkit.train.run import load_scene, scene_for_model

    path = Path(path)
    subject = open_subject(path, scene, downscale, ply_transform)
    where = subject.config.get("scene")
    if not where or not Path(where).is_dir():
        raise FieldkitError(f"evaluating {path.name} needs the photos of its dataset: pass "
                            "--scene (and --downscale) as for `fieldkit distill`")
    photos = scene_for_model(load_scene(where, downscale=int(subject.config["downscale"])),
                             "splat")
    out = Path(out) if out is not None else path.with_name(f"{path.stem}-eval")
    return evaluate_model(subject.model, photos, "white", out, split), out


def evaluate_model(model: torch.nn.Module, scene: Scene, background: str, folder: Path,
                   split: str = "test", save_renders: bool = True) -> dict:
    """Render every view of ``split`` of ``scene`` on ``background`` (white or black); write
    FOLDER/metrics.json and FOLDER/renders/<split>/. Scenes without alpha (photos of real
    scenes) also get the colour-corrected PSNR ("psnr_cc", ``metrics.color_correct``), which
    leaves each photo's exposure and white balance out of the score; in scenes with alpha the
    background is white, clipped, and left out of the correction's fit, which then misplaces
    it, so they do not."""
    model.eval()
    device = next(model.parameters()).device
    bg = torch.tensor(BACKGROUNDS[background])
    out_dir = Path(folder) / "renders" / split
    out_dir.mkdir(parents=True, exist_ok=True)
    views = scene.split(split).tolist()
    per_view, seconds = [], 0.0
    for k, i in enumerate(progress_iter(views, total=len(views), desc=f"evaluating {split}")):
        t0 = time.perf_counter()
        out = {k: v.cpu() for k, v in
               model.render(scene.cameras[i].to(device), bg.to(device)).items()}
        seconds += time.perf_counter() - t0
        if k == 0:   # hash grids on the CPU: compile when the views ahead pay for it
            compile_if_it_pays(model, seconds * (len(views) - 1))
        target = composite(scene.image(i), bg)
        per_view.append({"view": i, "image": scene.image_paths[i].name,
                         "psnr": psnr(out["rgb"], target), "ssim": ssim(out["rgb"], target)})
        if not scene.has_alpha:
            per_view[-1]["psnr_cc"] = psnr_cc(out["rgb"], target)
        if save_renders:
            Image.fromarray(to_uint8(out["rgb"])).save(out_dir / f"{k:04d}.png")
            depth = colorize_depth(out["depth"][..., 0].numpy(), out["alpha"][..., 0].numpy())
            Image.fromarray(depth).save(out_dir / f"{k:04d}_depth.png")
    metrics = {
        "psnr": float(np.mean([v["psnr"] for v in per_view])),
        "ssim": float(np.mean([v["ssim"] for v in per_view])),
        "num_views": len(per_view), "split": split, "background": background,
        "resolution": f"{int(scene.cameras.width[views[0]])}x{int(scene.cameras.height[views[0]])}",
        "seconds_per_view": seconds / max(1, len(views)),
        "per_view": per_view,
    }
    if not scene.has_alpha:  # photos of real scenes; a white background is all clipped
        metrics["psnr_cc"] = float(np.mean([v["psnr_cc"] for v in per_view]))
    atomic_write_json(Path(folder) / "metrics.json", metrics)
    return metrics
