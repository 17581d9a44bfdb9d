"""`fieldkit distill TEACHER_RUN --to KIND`: convert a trained model into another representation.

Works from the teacher run alone (its model file and its training cameras); the photos, when
still on disk, only serve the report. The student is an ordinary run directory (config.json,
model.safetensors, checkpoint/, log.jsonl) that every other command reads, plus distill.json.
"""
from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from fieldkit import __version__
from fieldkit.data.cameras import Cameras
from fieldkit.data.normalize import Normalisation
from fieldkit.data.scene import Scene
from fieldkit.distill.budget import RenderBudget
from fieldkit.distill.config import DistillConfig, student_config
from fieldkit.distill.field import FieldDistillTrainer, init_grid_from_teacher
from fieldkit.distill.report import model_facts, print_report, versus_photos, versus_teacher
from fieldkit.distill.source import open_teacher
from fieldkit.distill.splat import init_splats_from_views
from fieldkit.distill.targets import build_ray_bank, render_scene
from fieldkit.distill.teacher import Teacher
from fieldkit.distill.views import novel_cameras, save_train_cameras, target_cameras
from fieldkit.errors import FieldkitError, warn
from fieldkit.fields.registry import build_model, model_from_config
from fieldkit.render.crop import CropBox, crop_model
from fieldkit.splats.foreign import SPLAT_FILES
from fieldkit.train.checkpoint import atomic_write_json
from fieldkit.train.config import TrainConfig, resumed_config
from fieldkit.train.rays import resolve_background
from fieldkit.train.run import read_config

MIN_DEFAULT_SECONDS = 30.0
DEFAULT_FRACTION = {"field": 0.25, "splat": 1.0}
"""Without a budget, a student gets this share of the teacher's training time: a quarter
between fields, the whole of it when splats are on either side.

- A splat student's targets are whole views (100 renders of the teacher) and it starts from
  points, not from the teacher's occupancy. On lego (hash-grid teacher, 300 s) a quarter gave
  25.98 dB against the photos, 2.14 below the teacher; the whole 300 s gave 27.62, 0.50 below
  (README, Distillation).
- A field student of splats learns a volume that draws what a rasterizer drew. Against the
  photos, below splat teachers trained 300 s (150 s for beer-colmap): fox 1.46 dB in a quarter
  of their time, 0.90 in all of it; beer-colmap 1.05 and 0.72; lego 1.29 and 0.79
  (apps/results/splat_to_field_cpu/bench.md)."""
STUDENT_MIN_SHARE = 0.5
"""The student's optimisation keeps at least this share of a time budget, however long the
teacher's renders took."""


def default_budget(config: TrainConfig, teacher_seconds: float | None, kind: str,
                   teacher_kind: str | None = None) -> TrainConfig:
    """When no budget is given, DEFAULT_FRACTION of the teacher's training time (2000 steps
    when the teacher's time is unknown) for a ``kind`` student of a ``teacher_kind`` teacher
    (None: a field).
    ``distill`` takes the teacher's render time out of any time budget, so that the whole
    distillation fits (``without_teacher_time``)."""
    if config.max_steps is not None or config.max_time is not None:
        return config
    if teacher_seconds:
        share = DEFAULT_FRACTION["splat" if "splat" in (kind, teacher_kind) else "field"]
        return replace(config, max_time=max(MIN_DEFAULT_SECONDS, share * teacher_seconds))
    return replace(config, max_steps=2000)


def without_teacher_time(config: TrainConfig, teacher_seconds: float) -> TrainConfig:
    """A time budget is the whole distillation's: the seconds spent rendering the teacher come
    out of the student's optimisation time, which keeps at least STUDENT_MIN_SHARE of it."""
    if config.max_time is None:
        return config
    return replace(config, max_time=max(STUDENT_MIN_SHARE * config.max_time,
                                        config.max_time - teacher_seconds))


def render_budget(train: TrainConfig, fit_time: bool, fixed: dict[str, int]) -> RenderBudget:
    """The limit on the target renders: the share of a time budget that the student's
    optimisation may give up (1 - STUDENT_MIN_SHARE), none without one; a resumed run renders
    the counts it saved (``fixed``)."""
    seconds = (1 - STUDENT_MIN_SHARE) * train.max_time \
        if fit_time and train.max_time is not None else None
    return RenderBudget(seconds, fixed=dict(fixed))


def _empty_cameras() -> Cameras:
    return Cameras(torch.zeros(0, 4, 4), torch.zeros(0, 3, 3), torch.zeros(0, dtype=torch.long),
                   torch.zeros(0, dtype=torch.long))


def _gt_scene(tcfg: dict, kinds: list[str]) -> tuple[Scene, str] | None:
    """The teacher's test photos, the same images for every model of ``kinds`` (undistorted
    when any of them projects through pinholes only), and which they are ("as shot" or
    "undistorted"); None when the scene is absent or has no test split."""
    from fieldkit.data.scene import load_scene
    from fieldkit.errors import SceneError
    from fieldkit.train.run import scene_for_model

    if not tcfg.get("scene") or not Path(tcfg["scene"]).is_dir():
        return None
    path = Path(tcfg["scene"])
    try:
        scene = load_scene(path, downscale=int(tcfg.get("downscale", 1)))
    except (SceneError, FieldkitError):
        return None
    if "test" not in scene.splits:
        return None
    distorted = scene.cameras.distortion is not None
    for kind in kinds:
        scene = scene_for_model(scene, kind)
    return scene, "undistorted" if distorted and scene.cameras.distortion is None else "as shot"


def distill(teacher_run: Path, kind: str, out: Path | None = None,
            train: TrainConfig | None = None, config: DistillConfig | None = None,
            preset: str = "default", device: str | None = None, resume: bool = False,
            quiet: bool = False, model_config=None, scene: Path | None = None,
            downscale: int = 1, ply_transform: Path | None = None,
            crop: CropBox | None = None) -> dict:
    """Distil the model of ``teacher_run`` (a run directory or a 3DGS .ply file) into a
    ``kind`` student in ``out``; returns the report (also in ``out/distill.json``), or
    ``{"interrupted": True, ...}`` after Ctrl-C (a checkpoint is saved). The arguments are
    ``Distillation``'s."""
    from fieldkit.train.interrupt import stop_on_ctrl_c

    with stop_on_ctrl_c():  # Ctrl-C during set-up: fieldkit/train/interrupt.py
        job = Distillation(teacher_run, kind, out, train, config, preset=preset, device=device,
                           resume=resume, model_config=model_config, scene=scene,
                           downscale=downscale, ply_transform=ply_transform, crop=crop)
        stats = job.trainer.train()
    return job.report(stats, quiet=quiet)


class Distillation:
    """One distillation, set up: the teacher opened, its targets rendered, the student and its
    trainer built. ``trainer.train()`` runs it (the live viewer hooks ``trainer.step`` first:
    ``fieldkit/viewer/live.py``), then ``report`` measures the student and writes
    distill.json."""

    def __init__(self, teacher_run: Path, kind: str, out: Path | None = None,
                 train: TrainConfig | None = None, config: DistillConfig | None = None,
                 preset: str = "default", device: str | None = None, resume: bool = False,
                 model_config=None, scene: Path | None = None, downscale: int = 1,
                 ply_transform: Path | None = None, crop: CropBox | None = None):
        """``model_config`` (the student's config, e.g. ``student_config(kind, preset)`` with
        the command line's settings) replaces ``student_config(kind, preset)``; a resumed run
        keeps its saved one. ``scene`` and ``downscale``: a .ply teacher's scene
        (``open_teacher``); ``ply_transform``: the nerfstudio frame it is in; ``crop``: the
        part of the teacher distilled (box coordinates; ``crop_model``); a resumed run keeps
        its saved ones."""
        t_start = time.perf_counter()
        teacher_run = Path(teacher_run)
        name = teacher_run.stem if teacher_run.suffix.lower() in SPLAT_FILES else teacher_run.name
        out = Path(out or teacher_run.parent / f"{name}-to-{kind}")
        if out.resolve() == teacher_run.resolve():
            raise FieldkitError("--out must differ from the teacher run")
        if device == "cuda" and not torch.cuda.is_available():
            raise FieldkitError("--device cuda was asked for but no CUDA device is available")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        train = train or TrainConfig()
        config = config or DistillConfig()
        user_time = train.max_time
        if resume:
            saved = read_config(out)
            if "distill" not in saved or not (out / "checkpoint").exists():
                raise FieldkitError(f"{out} holds no distillation to resume; drop --resume")
            kind, preset = saved["model"]["kind"], saved["model"].get("preset", "default")
            train = resumed_config(saved["train"], train)
            config = DistillConfig.from_saved(saved["distill"]["config"])
            crop = CropBox.from_flat(saved["distill"].get("crop"))
            if saved["distill"].get("from_file"):  # a .ply teacher: with the scene it had
                scene = Path(saved["scene"]) if saved["distill"]["cameras"] == "scene" else None
                downscale = int(saved.get("downscale", 1))
                saved_transform = saved["distill"].get("ply_transform")
                ply_transform = Path(saved_transform) if saved_transform else None
        elif (out / "checkpoint").exists():
            raise FieldkitError(f"{out} already holds a run; pass --resume to continue it or --out "
                                "to start a new one")
        source = open_teacher(teacher_run, device, scene, downscale, ply_transform)
        if source.is_ply:   # in the file's own coordinates, as `fieldkit view` shows it
            from fieldkit.export.subject import crop_file_splats

            crop_file_splats(source.model, Normalisation.from_dict(source.config[
                "normalisation"]), crop, Path(teacher_run).name)
        else:
            crop_model(source.model, crop, f"the teacher {teacher_run}")
        tcfg, cams, cam_source, t_seconds = (source.config, source.cameras, source.camera_source,
                                             source.train_seconds)
        initial = None   # Gaussians a splat student starts from
        # a time budget given now (or the default) covers the teacher's renders; a resumed run's
        # saved one already had them taken out
        fit_time = not resume or user_time is not None
        train = default_budget(train, t_seconds, kind, source.model.kind)

        teacher = Teacher(source.model)
        if not resume:   # saved with the run as they apply to this pair (a resume reads them)
            config = replace(config, volume_fraction=config.volume_fraction_for(kind),
                             point_bank=config.point_bank_for(kind, teacher.is_splat))
        norm = Normalisation.from_dict(tcfg["normalisation"])
        budget = render_budget(train, fit_time, saved["distill"].get("rendered", {})
                               if resume else {})
        held = novel_cameras(cams, config.held_out_views, seed=config.seed + 7919,
                             scale=config.view_scale)
        student_views = target_cameras(cams, config.views, seed=config.seed,
                                       scale=config.view_scale, train_share=config.train_view_share
                                       ) if kind == "splat" else _empty_cameras()
        views = render_scene(teacher, student_views, held, norm, teacher_run, budget)
        # the held-out views only serve evaluation (like the photos): their renders are reported
        # apart and stay out of the time budget, as evaluation stays out of training time
        held_frames = views.frame_seconds[views.num_train:]
        held_seconds = sum(held_frames)
        teacher_seconds = views.seconds - held_seconds
        teacher_frame = float(torch.tensor(held_frames).median()) if held_frames else float("nan")

        bound = float(tcfg["model"]["config"]["render"]["bound"])
        torch.manual_seed(train.seed)
        student = (model_from_config(kind, saved["model"]["config"]) if resume
                   else build_model(kind, bound, preset, config=model_config if model_config
                                    is not None else student_config(kind, preset)))
        train = replace(train, background=resolve_background(train.background, views.scene))
        if kind == "splat":
            if not resume:
                initial = init_splats_from_views(student, views, cams,
                                                 points_per_pixel=config.splat_points_per_pixel)
            student = student.to(device)
            trainer_cls, extra = student.trainer_class(), {}
        else:
            t0 = time.perf_counter()
            bank_cams = novel_cameras(cams, config.bank_views, seed=config.seed + 1,
                                      scale=config.view_scale)
            bank = build_ray_bank(teacher, bank_cams, config.bank_rays_for(teacher.is_splat),
                                  torch.Generator().manual_seed(config.seed + 2), budget)
            student = student.to(device)
            init_grid_from_teacher(student, teacher)
            teacher_seconds += time.perf_counter() - t0
            trainer_cls = FieldDistillTrainer
            extra = {"teacher": teacher, "bank": bank, "distill": config}

        if fit_time:
            train = without_teacher_time(train, teacher_seconds)
        if budget.summary():
            warn(budget.summary())
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "config.json", {
            "fieldkit_version": __version__, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "scene": tcfg["scene"], "scene_format": tcfg.get("scene_format"),
            "downscale": tcfg.get("downscale", 1), "normalisation": tcfg["normalisation"],
            **{k: tcfg[k] for k in ("nerfstudio_frame",) if k in tcfg},
            "model": {"kind": kind, "preset": preset, "config": asdict(student.config),
                      "num_params": student.num_params},
            "train": train.to_dict(),
            "distill": {"teacher": str(teacher_run.resolve()), "teacher_kind": teacher.kind,
                        "cameras": cam_source, "from_file": source.is_ply,
                        "ply_transform": _saved_transform(ply_transform),
                        "crop": crop.flat() if crop is not None else None,
                        "config": config.to_dict(),
                        "rendered": budget.made}})
        save_train_cameras(out, cams)
        if trainer_cls is FieldDistillTrainer:
            trainer = FieldDistillTrainer(views, student, train, out, **extra)
        else:
            trainer = trainer_cls(views.scene, student, train, out)
        if resume:
            trainer.resume()
        self.t_start, self.teacher_run, self.out, self.kind = t_start, teacher_run, out, kind
        self.source, self.teacher, self.student, self.trainer = source, teacher, student, trainer
        self.views, self.budget, self.config, self.cameras = views, budget, config, cams
        self.normalisation, self.initial, self.crop = norm, initial, crop
        self.teacher_seconds, self.held_seconds = teacher_seconds, held_seconds
        self.teacher_frame = teacher_frame

    def report(self, stats: dict, quiet: bool = False) -> dict:
        """After ``trainer.train()`` (its ``stats``): the fidelity report, also written to
        distill.json and printed unless ``quiet``; ``{"interrupted": True, ...}`` when
        training was interrupted."""
        out, trainer, student, teacher = self.out, self.trainer, self.student, self.teacher
        source, views, budget, config = self.source, self.views, self.budget, self.config
        teacher_seconds, held_seconds = self.teacher_seconds, self.held_seconds
        tcfg, t_seconds, initial = source.config, source.train_seconds, self.initial
        if stats.get("interrupted"):
            return {"interrupted": True, "student_run": str(out), "steps": trainer.step_count}

        student.eval()
        report = {
            "teacher_run": str(self.teacher_run), "student_run": str(out),
            "teacher": {**model_facts(teacher.model, source.model_file),
                        "train_seconds": t_seconds},
            "student": {**model_facts(student, out / "model.safetensors"),
                        "steps": trainer.step_count,
                        **({"initial_gaussians": initial} if initial is not None else {})},
            "cameras": source.camera_source,
            **({"crop": self.crop.flat(), "crop_in": "file" if source.is_ply else "box"}
               if self.crop is not None else {}),
            "teacher_seconds_per_frame": self.teacher_frame,
            "targets": {"rendered": budget.made, "cut": budget.cuts},
            "vs_teacher": versus_teacher(student, views),
        }
        photos = _gt_scene(tcfg, [teacher.kind, self.kind]) if config.gt_views > 0 else None
        if photos is not None:
            report["vs_photos"] = {"photos": photos[1], **versus_photos(
                {"teacher": teacher.model, "student": student}, photos[0], config.gt_views)}
        report["time"] = {"teacher_seconds": teacher_seconds, "student_seconds": trainer.elapsed,
                          "distill_seconds": teacher_seconds + trainer.elapsed,
                          "held_out_seconds": held_seconds,
                          "total_seconds": time.perf_counter() - self.t_start}
        atomic_write_json(out / "distill.json", report)
        if not quiet:
            print_report(report)
        return report


def _saved_transform(ply_transform: Path | None) -> str | None:
    """``--ply-transform`` as a resume finds it again: a file's absolute path, or the word."""
    from fieldkit.splats.gsplat_folder import GSPLAT_FRAME

    if ply_transform is None:
        return None
    if str(ply_transform) == GSPLAT_FRAME:
        return GSPLAT_FRAME
    return str(Path(ply_transform).resolve())
