"""What an export reads: a fieldkit run, or the Gaussians any 3DGS trainer wrote.

A run brings its model, its normalisation (world -> box) and its training cameras. A splat
file or another trainer's folder (a 3DGS .ply, .spz, .splat, .ksplat, .sog, SuperSplat's
.compressed.ply, the original 3DGS output folder, gsplat's results, a splatfacto run) is opened
as a distillation opens such a teacher (``fieldkit/distill/source.py``): in a box that holds
its Gaussians, with the views of its dataset (``--scene``, or the one its folder names), of its
folder's cameras.json, or of a sphere around it. Every export then works the same on both: a
splat file converts to any other splat file, to a web page, to a mesh (TSDF or Poisson on its
renders) or to a point cloud.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fieldkit.data.cameras import Cameras
from fieldkit.data.normalize import Normalisation
from fieldkit.errors import FieldkitError
from fieldkit.render.crop import CropBox
from fieldkit.splats.foreign import SPLAT_FILES


@dataclass
class Subject:
    """A model to export, with what its exports need around it."""

    label: str
    """Name of the run folder or file (page titles, messages)."""
    model: torch.nn.Module
    """The model, in box coordinates, on the CPU."""
    normalisation: Normalisation
    """World -> box transform (a file's world: its own coordinates, or its dataset's)."""
    cameras: Cameras
    """Training cameras (box coordinates; splat runs: pinholes), or the views standing in for
    them (a splat file: ``TeacherSource.camera_source``)."""
    config: dict
    """The run's config (a file: what a run of it would say: scene, downscale, model)."""
    run_dir: Path | None = None
    """The run folder (None for a splat file)."""
    steps: int = 0
    """Steps the model trained (a 3DGS output folder's iteration number)."""

    @property
    def is_file(self) -> bool:
        """Gaussians read from another trainer's file, not a fieldkit run."""
        return self.run_dir is None

    @property
    def background(self) -> tuple[float, float, float]:
        """The run's evaluation background (white for a file)."""
        from fieldkit.train.rays import BACKGROUNDS

        name = self.config.get("train", {}).get("background", "white")
        return BACKGROUNDS.get(name, BACKGROUNDS["white"])   # random: white

    def take_crop(self, crop: CropBox | None) -> CropBox | None:
        """Apply ``crop`` in the coordinates it is given in; returns what is left for the
        export to apply. A run's crop is in its box coordinates (the viewer's Crop box panel):
        returned as is. A splat file's is in the file's own coordinates
        (``crop_file_splats``): applied here, and None is returned."""
        if crop is None or not self.is_file:
            return crop
        crop_file_splats(self.model, self.normalisation, crop, self.label)
        return None


def cropped(subject: Subject, config):
    """An export's ``config`` (a dataclass with a ``crop``) once its crop is applied to the
    subject's model, in place: a splat file's in its own coordinates (``take_crop``; the
    returned config has no crop left), a run's in its box (``crop_model``; the config keeps
    it, for the lattice of marching cubes and the points' filter)."""
    from dataclasses import replace

    from fieldkit.render.crop import crop_model

    crop = subject.take_crop(config.crop)
    crop_model(subject.model, crop, subject.label)
    return replace(config, crop=crop)


def crop_file_splats(model: torch.nn.Module, normalisation: Normalisation,
                     crop: CropBox | None, label: str) -> None:
    """Keep the Gaussians of a splat file's ``model`` (in the box ``normalisation`` maps its
    world to) whose centres lie in ``crop``, given in the file's own coordinates (its
    dataset's world when it was brought there), where ``fieldkit view`` shows the file and
    its Crop box panel reads; in place. A one-line error when none is left."""
    if crop is None:
        return
    if not all(a < b for a, b in zip(crop.lo, crop.hi)):
        raise FieldkitError(f"the crop box's minimum corner {crop.lo} must lie below its "
                            f"maximum corner {crop.hi} on every axis")
    params = model.export_params()
    world = normalisation.to_world(params["means"].double())
    keep = crop.inside(world)
    if not bool(keep.any()):
        lo, hi = world.min(0).values.tolist(), world.max(0).values.tolist()
        raise FieldkitError(
            f"--crop holds none of the {len(world):,} Gaussians of {label}, which lie in "
            f"{' '.join(f'{v:.3g}' for v in lo)} {' '.join(f'{v:.3g}' for v in hi)} (the "
            "file's own coordinates, as `fieldkit view` shows them)")
    model.set_gaussians({k: v[keep] for k, v in params.items()})


def check_exists(path: Path) -> None:
    """A one-line error when ``path`` (a run or a splat file) is not there."""
    if not Path(path).exists():
        raise FieldkitError(f"{path} does not exist; pass a run folder or a splat file "
                            f"({', '.join(SPLAT_FILES)})")


def is_splat_path(path: Path) -> bool:
    """A splat file, or a folder another trainer wrote (not a fieldkit run)."""
    from fieldkit.splats.foreign import latest_in

    path = Path(path)
    return path.suffix.lower() in SPLAT_FILES or latest_in(path) is not None


def open_subject(source: Path | Subject, scene: Path | None = None, downscale: int = 1,
                 ply_transform: Path | None = None) -> Subject:
    """``source`` opened for export (a Subject is returned as it is): a run directory, or a
    splat file or another trainer's folder, in the world of ``scene`` when given (as
    ``fieldkit distill --scene``: its training cameras at ``downscale`` give the views) and in
    the frame ``ply_transform`` names."""
    if isinstance(source, Subject):
        return source
    path = Path(source)
    if is_splat_path(path):
        from fieldkit.distill.source import open_teacher

        teacher = open_teacher(path, "cpu", scene, downscale, ply_transform)
        return Subject(path.name, teacher.model, Normalisation.from_dict(
            teacher.config["normalisation"]), teacher.cameras, teacher.config)
    check_exists(path)
    if path.is_dir() and not (path / "config.json").is_file():
        raise FieldkitError(f"{path} is neither a fieldkit run (no config.json) nor a splat "
                            "trainer's output folder; pass a run folder or a splat file")
    if scene is not None or ply_transform is not None:
        raise FieldkitError("--scene and --ply-transform are for a splat file; a run brings "
                            "its own scene")
    from fieldkit.train.run import last_log_entry, load_model, read_config, run_train_cameras

    config = read_config(path)
    return Subject(path.name, load_model(path), Normalisation.from_dict(config["normalisation"]),
                   run_train_cameras(path), config, run_dir=path,
                   steps=int((last_log_entry(path) or {}).get("step", 0)))
