"""`fieldkit distill`."""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fieldkit.commands.common import Crop, Positional, serve_until_ctrl_c
from fieldkit.distill.config import DistillConfig
from fieldkit.errors import FieldkitError
from fieldkit.fields.models import TriPlaneModelConfig
from fieldkit.model_options import ModelOptions
from fieldkit.splats.model import SplatConfig


def _student_default(kind: str):
    """The default preset's config of a distillation student (its section's defaults)."""
    from fieldkit.distill.config import student_config

    return student_config(kind)


@dataclass
class Distill(ModelOptions):
    """Convert a trained run, or any 3DGS .ply, into another representation (hashgrid,
    triplane, mlp, splat) from the teacher alone; writes a student run and its fidelity report
    (RUN/distill.json)."""

    teacher: Positional[Path]
    """Teacher run directory, a 3D Gaussian Splatting .ply file from any trainer (or a web
    viewer's .spz, .splat, .ksplat, .sog or SuperSplat .compressed.ply; an unbundled SOG
    folder), the original 3DGS trainer's output folder (its latest point_cloud.ply and its cameras.json),
    gsplat's simple_trainer results folder or checkpoint (ckpts/ckpt_*.pt), or a nerfstudio
    splatfacto run folder or checkpoint (nerfstudio_models/step-*.ckpt); the dataset their
    config names gives the views when it is here."""
    to: Literal["hashgrid", "triplane", "mlp", "splat"]
    """Student representation."""
    scene: Path | None = None
    """.ply teacher only: the scene its splats were trained on (in that scene's world units).
    Its training cameras give the views and its test photos the report. Without it, the
    cameras.json of the 3DGS output folder the .ply lies in gives the views; without either,
    they circle a box that holds the Gaussians."""
    downscale: int = 1
    """.ply teacher: the image downscale factor of its views (--scene's images, its
    cameras.json's full-size cameras, or the 256 px views around it)."""
    ply_transform: Path | None = None
    """.ply teacher: the dataparser_transforms.json of the nerfstudio run that exported it
    (splatfacto's `ns-export gaussian-splat` writes the Gaussians in nerfstudio's frame, not in
    the dataset's world units; automatic for a splatfacto run folder), or `gsplat` for
    gsplat's normalised frame (recomputed from the COLMAP dataset; automatic inside its results
    folder); with --scene, its dataset."""
    out: Path | None = None
    """Student run directory (default: <teacher>-to-<kind> beside the teacher)."""
    max_time: float | None = None
    """Seconds for the whole distillation: renders of the teacher, then the student's
    optimisation for the rest (at least half). Default: the teacher's training time when
    splats are on either side, a quarter of it between fields."""
    max_steps: int | None = None
    """Student optimisation steps."""
    device: Literal["cpu", "cuda"] | None = None
    """Compute device (default: cuda when available)."""
    seed: int = 0
    """Seed of the student's initialisation and batches."""
    resume: bool = False
    """Continue an interrupted distillation in --out."""
    viewer: bool = False
    """Serve the live viewer while distilling: the student beside its teacher."""
    weights: Literal["float32", "float16"] = "float32"
    """Precision of the student's weights in its model.safetensors (float16: about half the
    file, renders within 0.003 dB of float32 on the demo; checkpoints stay float32)."""
    port: int = 7007
    """Viewer port."""
    crop: Crop = None
    """Distil only what lies in the box X0 Y0 Z0 X1 Y1 Z1 (box coordinates, as the viewer's
    Crop box panel shows them; a splat file's own coordinates, as `fieldkit view FILE` shows
    them): the teacher is cropped first (a field's density is zero outside, a splat teacher
    keeps the Gaussians whose centres lie inside)."""
    lr: float | None = None
    """Peak Adam learning rate of the student (default: its model's own); for splat, a
    multiplier of its per-parameter rates."""
    triplane: TriPlaneModelConfig = dataclasses.field(
        default_factory=lambda: _student_default("triplane"), kw_only=True)
    """triplane student settings (default: 8 channels a plane, STUDENT_DEFAULTS in
    fieldkit/distill/config.py); any you set here override the preset."""
    splat: SplatConfig = dataclasses.field(
        default_factory=lambda: _student_default("splat"), kw_only=True)
    """splat student settings (default: up to 50k Gaussians seeded at the teacher's surface,
    STUDENT_DEFAULTS in fieldkit/distill/config.py, and --distill.splat-points-per-pixel); any
    you set here override the preset."""
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)
    """Targets, stages and report."""

    def base_config(self, kind: str):
        """A student starts from ``student_config``: its preset plus STUDENT_DEFAULTS."""
        from fieldkit.distill.config import student_config

        return student_config(kind, self.preset)

    def run(self) -> None:
        from fieldkit.distill.run import distill
        from fieldkit.render.crop import CropBox
        from fieldkit.train.config import TrainConfig

        if self.max_time is not None and self.max_time <= 0:
            raise FieldkitError("--max-time must be a positive number of seconds")
        if self.max_steps is not None and self.max_steps < 1:
            raise FieldkitError("--max-steps must be a positive number")
        config = TrainConfig(max_steps=self.max_steps, max_time=self.max_time, seed=self.seed,
                             lr=self.lr, weights=self.weights)
        self.check_only_kind(self.to)
        kwargs = dict(teacher_run=self.teacher, kind=self.to, out=self.out, train=config,
                      config=dataclasses.replace(self.distill), preset=self.preset,
                      device=self.device, resume=self.resume,
                      model_config=None if self.resume else self.model_config(self.to),
                      scene=self.scene, downscale=self.downscale,
                      ply_transform=self.ply_transform, crop=CropBox.from_flat(self.crop))
        live = None
        if self.viewer:  # the viewer renders between steps and stays up afterwards
            from fieldkit.viewer import require_viser
            from fieldkit.viewer.config import ViewerConfig
            from fieldkit.viewer.live import distill_with_viewer

            require_viser()
            report, live = distill_with_viewer(ViewerConfig(port=self.port), **kwargs)
        else:
            report = distill(**kwargs)
        if live is not None and report.get("interrupted"):
            live.viewer.stop()
        self._finish(report)
        if live is not None:
            serve_until_ctrl_c(live)

    def _finish(self, report: dict) -> None:
        if report.get("interrupted"):
            print(f"interrupted: checkpoint saved; continue with `fieldkit distill "
                  f"{self.teacher} --to {self.to} --out {report['student_run']} --resume`",
                  file=sys.stderr)
            raise SystemExit(130)
        print(f"report     {Path(report['student_run']) / 'distill.json'}")
