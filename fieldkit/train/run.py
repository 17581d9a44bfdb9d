"""Run directories: what `fieldkit train` writes and what eval/render/export read back.

A run holds config.json (scene, normalisation, model and training configuration),
model.safetensors, checkpoint/, log.jsonl, psnr.png, metrics.json and renders/.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from fieldkit import __version__
from fieldkit.data.cameras import Cameras
from fieldkit.data.scene import Scene, load_scene
from fieldkit.errors import FieldkitError
from fieldkit.fields.registry import (build_model, load_model_file, model_from_config,
                                      preset_config)
from fieldkit.train.checkpoint import atomic_write_json
from fieldkit.train.config import TrainConfig, resumed_config
from fieldkit.train.rays import resolve_background

def read_config(run_dir: Path) -> dict:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FieldkitError(f"{run_dir} is not a fieldkit run (no config.json); pass a folder "
                            "written by `fieldkit train`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise FieldkitError(f"{path} is corrupt ({e.msg}); retrain or restore it") from None


def last_log_entry(run_dir: Path) -> dict | None:
    """The last line of a run's log.jsonl (step, elapsed, loss, ...), or None without one."""
    log = Path(run_dir) / "log.jsonl"
    lines = [ln for ln in log.read_text().splitlines() if ln.strip()] if log.is_file() else []
    return json.loads(lines[-1]) if lines else None


def load_model(run_dir: Path, device: str = "cpu") -> torch.nn.Module:
    """The trained model of a run (no pickling)."""
    read_config(run_dir)
    path = Path(run_dir) / "model.safetensors"
    if not path.is_file():
        raise FieldkitError(f"{run_dir} has no model.safetensors yet; train it first")
    return load_model_file(path, device=device)


def load_run_scene(run_dir: Path) -> Scene:
    """The scene a run was trained on, at the run's downscale."""
    cfg = read_config(run_dir)
    return scene_for_model(load_scene(cfg["scene"], downscale=cfg["downscale"]),
                           cfg["model"]["kind"])


def run_train_cameras(run_dir: Path) -> Cameras:
    """The training cameras of a run (box coordinates; splat runs: pinholes), without its
    photos: those it saved (``cameras.safetensors``), else its scene's, else a sphere of views
    around its box (a run whose scene is gone, e.g. a student distilled from a .ply)."""
    from fieldkit.distill.views import CAMERAS_FILE, train_cameras

    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    if not (run_dir / CAMERAS_FILE).is_file() and cfg.get("scene") and \
            Path(cfg["scene"]).is_dir():
        scene = load_run_scene(run_dir)  # splats: the undistorted cameras
        return scene.cameras[scene.split("train")]
    return train_cameras(run_dir, cfg)[0]


def scene_for_model(scene: Scene, kind: str) -> Scene:
    """Pinhole-only models (``pinhole_only``: splats) see undistorted copies of the photos."""
    from fieldkit.data.undistort import undistort_scene
    from fieldkit.fields.registry import model_class

    return undistort_scene(scene) if getattr(model_class(kind), "pinhole_only", False) else scene


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    elapsed: float
    interrupted: bool


def default_run_dir(scene: Path, kind: str) -> Path:
    return Path("runs") / f"{Path(scene).resolve().name}-{kind}"


def train(scene_path: Path, kind: str, run_dir: Path | None, config: TrainConfig,
          downscale: int = 1, device: str | None = None, resume: bool = False,
          preset: str = "default", model_config=None, init: Path | None = None) -> TrainResult:
    """Train (or resume) a run. Prints nothing; the CLI reports."""
    from fieldkit.train.interrupt import stop_on_ctrl_c

    with stop_on_ctrl_c():  # a Ctrl-C during set-up stops it at step 0, with a checkpoint
        trainer = prepare(scene_path, kind, run_dir, config, downscale, device, resume, preset,
                          model_config, init)
        stats = trainer.train()
    return TrainResult(trainer.run_dir, trainer.step_count, trainer.elapsed,
                       bool(stats["interrupted"]))


def scene_trainer(scene, kind: str, config: TrainConfig, run_dir: Path):
    """A Trainer of a new ``kind`` model (default preset, seeded by ``config.seed``) on a
    ``scene`` already in memory and made for the model (``scene_for_model``): for tests and
    benchmarks that change a scene's photos or poses first. Writes no config.json."""
    from fieldkit.train.trainer import Trainer

    torch.manual_seed(config.seed)
    model = build_model(kind, scene.normalisation.bound)
    if hasattr(model, "init_from_scene"):
        model.init_from_scene(scene, None)
    cls = model.trainer_class() if hasattr(model, "trainer_class") else Trainer
    return cls(scene, model, config, run_dir)


def prepare(scene_path: Path, kind: str, run_dir: Path | None, config: TrainConfig,
            downscale: int = 1, device: str | None = None, resume: bool = False,
            preset: str = "default", model_config=None, init: Path | None = None):
    """A Trainer for a new run (config.json written) or for a resumed one (state restored).

    ``init``: a 3DGS .ply the splat model starts from (world units of the scene)."""
    from fieldkit.train.trainer import Trainer

    if device == "cuda" and not torch.cuda.is_available():
        raise FieldkitError("--device cuda was asked for but no CUDA device is available; "
                            "drop --device to train on the CPU")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    run_dir = Path(run_dir or default_run_dir(scene_path, kind))
    if resume:
        saved = read_config(run_dir)
        if not (run_dir / "checkpoint").exists() and not (run_dir / "checkpoint.old").exists():
            raise FieldkitError(f"{run_dir} has no checkpoint to resume; train without --resume")
        scene_path, kind, downscale = Path(saved["scene"]), saved["model"]["kind"], \
            saved["downscale"]
        config = resumed_config(saved["train"], config)
    elif (run_dir / "checkpoint").exists():
        raise FieldkitError(f"{run_dir} already holds a run; pass --resume to continue it or "
                            "--out to start a new one")
    if config.distortion_weight < 0:
        raise FieldkitError("--distortion-weight must be 0 (off) or positive")
    if config.distortion_weight and kind == "splat":
        raise FieldkitError("--distortion-weight is for volumetric models (hashgrid, triplane, "
                            "mlp), not splat")
    scene = scene_for_model(load_scene(scene_path, downscale=downscale), kind)
    config = replace(config, background=resolve_background(config.background, scene))
    torch.manual_seed(config.seed)  # model initialisation depends only on the seed
    if resume:
        model = model_from_config(kind, saved["model"]["config"])
        preset = saved["model"].get("preset", "default")
    else:
        if kind == "hashgrid" and device == "cuda":  # tiny-cuda-nn computes the tcnn lattice
            from fieldkit.encoders.hashgrid_tcnn import prefer_tcnn_convention

            model_config = prefer_tcnn_convention(model_config or preset_config(kind, preset))
        model = build_model(kind, scene.normalisation.bound, preset, model_config)
        if hasattr(model, "init_from_scene"):
            model.init_from_scene(scene, init)
        elif init is not None:
            raise FieldkitError(f"--init is for splat models; {kind} starts from scratch")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", {
        "fieldkit_version": __version__, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "scene": str(Path(scene_path).resolve()), "scene_format": scene.format,
        "downscale": downscale, "normalisation": scene.normalisation.as_dict(),
        "model": {"kind": kind, "preset": preset, "config": asdict(model.config),
                  "num_params": model.num_params},
        "train": config.to_dict()})
    from fieldkit.distill.views import save_train_cameras

    save_train_cameras(run_dir, scene.cameras[scene.split("train")])  # distillation needs no scene
    model = model.to(device)  # images stay on the CPU; each batch moves to the model
    trainer_cls = model.trainer_class() if hasattr(model, "trainer_class") else Trainer
    trainer = trainer_cls(scene, model, config, run_dir)
    if resume:
        trainer.resume()
    return trainer
