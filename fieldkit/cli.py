"""The ``fieldkit`` command line. Subcommands are thin: they parse, then call the library.

User mistakes raise ``FieldkitError``; ``main`` prints its one line and exits non-zero.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Union

import tyro

from fieldkit.distill.config import DistillConfig
from fieldkit.errors import FieldkitError, FieldkitWarning
from fieldkit.fields.models import TriPlaneModelConfig
from fieldkit.model_options import ModelOptions
from fieldkit.splats.model import SplatConfig

Positional = tyro.conf.Positional
Crop = Annotated[tuple[float, float, float, float, float, float] | None,
                 tyro.conf.arg(metavar="X0 Y0 Z0 X1 Y1 Z1")]


def _report_eval(run_dir: Path) -> None:
    from fieldkit.train.evaluate import evaluate_run

    m = evaluate_run(run_dir)
    print(f"metrics    {Path(run_dir) / 'metrics.json'}: PSNR {m['psnr']:.2f} dB, "
          f"SSIM {m['ssim']:.4f} on {m['num_views']} {m['split']} views")


@dataclass
class Train(ModelOptions):
    """Train a model on a scene folder (Blender, instant-ngp/nerfstudio or COLMAP)."""

    scene: Positional[Path]
    """Scene folder."""
    model: Literal["hashgrid", "triplane", "mlp", "splat"] = "hashgrid"
    """Representation to train."""
    out: Path | None = None
    """Run directory (default: runs/<scene>-<model>)."""
    max_steps: int | None = None
    """Stop after this many optimiser steps."""
    max_time: float | None = None
    """Stop after this many seconds of training."""
    downscale: int = 1
    """Reduce images by this integer factor (cached next to the scene)."""
    background: Literal["auto", "white", "black", "random"] = "auto"
    """Colour composited behind transparent pixels and empty space while training (auto:
    random for images with alpha, else white; evaluation uses white for random)."""
    device: Literal["cpu", "cuda"] | None = None
    """Compute device (default: cuda when available)."""
    seed: int = 0
    """Random seed; the same seed and budget give the same run."""
    resume: bool = False
    """Continue from the run directory's last checkpoint."""
    viewer: bool = False
    """Serve the live viewer while training."""
    port: int = 7007
    """Viewer port."""
    final_eval: bool = True
    """Evaluate on every test view when training ends (writes metrics.json)."""
    video: bool = True
    """Render an orbit video into RUN/renders/orbit.mp4 when training ends."""
    lr: float | None = None
    """Peak Adam learning rate (default: the model's own); for splat, a multiplier of its
    per-parameter rates."""
    distortion_weight: float = 0.0
    """Weight of mip-NeRF 360's distortion loss (volumetric models; 0: off)."""
    init: Path | None = None
    """--model splat: start from this splat file (.ply, .spz, .splat; the scene's world units)
    instead of the scene's sparse points or random points."""
    weights: Literal["float32", "float16"] = "float32"
    """Precision of the weights in RUN/model.safetensors (float16: about half the file, renders
    within 0.003 dB of float32 on the demo; checkpoints stay float32)."""

    def run(self) -> None:
        from fieldkit.train.config import TrainConfig
        from fieldkit.train.run import train

        config = TrainConfig(max_steps=self.max_steps, max_time=self.max_time,
                             background=self.background, seed=self.seed, lr=self.lr,
                             distortion_weight=self.distortion_weight, weights=self.weights)
        self.check_only_kind(self.model)
        model_config = None if self.resume else self.model_config(self.model)
        live = None
        if self.viewer:  # the viewer renders between training steps and stays up afterwards
            from fieldkit.viewer import require_viser
            from fieldkit.viewer.config import ViewerConfig
            from fieldkit.viewer.live import train_with_viewer

            require_viser()
            result, live = train_with_viewer(
                self.scene, self.model, self.out, config, ViewerConfig(port=self.port),
                downscale=self.downscale, device=self.device, resume=self.resume,
                preset=self.preset, model_config=model_config,
                init=self.init)
        else:
            result = train(self.scene, self.model, self.out, config, downscale=self.downscale,
                           device=self.device, resume=self.resume, preset=self.preset,
                           model_config=model_config,
                           init=self.init)
        print(f"run        {result.run_dir} ({result.steps} steps, {result.elapsed:.0f} s)")
        if result.interrupted:
            print(f"interrupted: checkpoint saved; continue with `fieldkit train {self.scene} "
                  f"--out {result.run_dir} --resume`", file=sys.stderr)
            raise SystemExit(130)
        if self.final_eval:
            _report_eval(result.run_dir)
        if self.video:
            from fieldkit.export.render import render_video

            out = render_video(result.run_dir, result.run_dir / "renders" / "orbit.mp4",
                               frames=60, fps=30)
            print(f"video      {out}")
        if live is not None:
            _serve_until_ctrl_c(live)


def _serve_until_ctrl_c(live) -> None:
    """Keep a finished run's viewer up until Ctrl-C."""
    import time

    print(f"viewer     still serving {live.viewer.url}; Ctrl-C to quit", flush=True)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        live.viewer.stop()


@dataclass
class Eval:
    """Evaluate a run on its test views; writes RUN/metrics.json."""

    run_dir: Positional[Path]
    """Run directory."""

    def run(self) -> None:
        _report_eval(self.run_dir)


@dataclass
class Render:
    """Render a video along a camera path."""

    run_dir: Positional[Path]
    """Run directory."""
    out: Path
    """Output video file (.mp4)."""
    path: str = "orbit"
    """Camera path: orbit, spiral, interp (smooth, through the training cameras), test, or a
    .json camera path file (fieldkit frames or nerfstudio's camera_path.json)."""
    frames: int = 120
    """Number of frames."""
    fps: int = 30
    """Frames per second."""
    width: int | None = None
    """Frame width (default: the training images' width)."""
    height: int | None = None
    """Frame height (default: the training images' height)."""
    depth: bool = False
    """Put a colour-mapped depth image beside each frame (same as --output both)."""
    output: Literal["rgb", "depth", "both"] | None = None
    """rgb, depth (colour mapped) or both side by side (default rgb)."""
    fov: float | None = None
    """Vertical field of view in degrees (default: the camera path's own)."""
    crop: Crop = None
    """Show only what lies in the box X0 Y0 Z0 X1 Y1 Z1 (box coordinates, as the viewer's Crop
    box panel shows them)."""

    def run(self) -> None:
        from fieldkit.export.render import render_video
        from fieldkit.render.crop import CropBox

        out = render_video(self.run_dir, self.out, self.path, self.frames, self.fps, self.width,
                           self.height, self.depth, self.output, self.fov,
                           CropBox.from_flat(self.crop))
        print(f"video      {out}")


@dataclass
class Export:
    """Export a mesh, point cloud or splat file from a run (world units and axes)."""

    kind: Positional[Literal["mesh", "points", "splats"]]
    """What to export."""
    run_dir: Positional[Path]
    """Run directory."""
    out: Path
    """Output file (.ply, .obj or .glb for meshes). splats: a 3DGS .ply; for web viewers a
    .spz (about a tenth of the .ply), a .compressed.ply (SuperSplat) or a .splat (base colours
    only); or a folder (no suffix) in the original 3DGS trainer's output layout:
    point_cloud/iteration_N/point_cloud.ply and the training cameras in cameras.json."""
    method: Literal["mc", "tsdf"] = "mc"
    """Mesh extraction: mc (marching cubes on the density) or tsdf (fused rendered depth)."""
    resolution: int = 256
    """Marching-cubes lattice points per side of the box (mc), or voxels per side of the
    region of interest (tsdf)."""
    views: int | None = None
    """Training views rendered: fused into a mesh (tsdf; default 100) or lifted into points
    (default 32)."""
    threshold: str = "auto"
    """Density of the isosurface, or auto (Otsu's split of the log-density histogram)."""
    target_faces: int | None = None
    """Decimate the mesh to about this many faces (quadric simplification)."""
    num: int = 1_000_000
    """Points in a point-cloud export (a random subset when more are found)."""
    spz_sh_bits: int = 6
    """.spz: bits kept of each view-dependent colour coefficient (1-8; fewer pack smaller).
    See SPZ_SH_BITS in fieldkit/export/splats.py for what each costs."""
    crop: Crop = None
    """Export only what lies in the box X0 Y0 Z0 X1 Y1 Z1 (box coordinates, as the viewer's
    Crop box panel shows them): a mesh's lattice covers the box alone, at the spacing
    --resolution gives its longest side, and surfaces it cuts are closed; splats keep the
    Gaussians whose centres lie inside."""

    def run(self) -> None:
        from fieldkit.export.run import export_run
        from fieldkit.render.crop import CropBox

        _, summary = export_run(self.kind, self.run_dir, self.out, self.method, self.resolution,
                                self.views, self.threshold, self.target_faces, self.num,
                                spz_sh_bits=self.spz_sh_bits, crop=CropBox.from_flat(self.crop))
        print(summary)


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
    viewer's .spz, .splat, .sog or SuperSplat .compressed.ply; an unbundled SOG folder), the
    original 3DGS trainer's output folder (its latest point_cloud.ply and its cameras.json),
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
    """.ply teacher: the image downscale factor of its views (--scene's images, or its
    cameras.json's full-size cameras)."""
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
    optimisation for the rest (at least half). Default: the teacher's training time for a
    splat student, a quarter of it for the others."""
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
    Crop box panel shows them): the teacher is cropped first (a field's density is zero
    outside, a splat teacher keeps the Gaussians whose centres lie inside)."""
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
            _serve_until_ctrl_c(live)

    def _finish(self, report: dict) -> None:
        if report.get("interrupted"):
            print(f"interrupted: checkpoint saved; continue with `fieldkit distill "
                  f"{self.teacher} --to {self.to} --out {report['student_run']} --resume`",
                  file=sys.stderr)
            raise SystemExit(130)
        print(f"report     {Path(report['student_run']) / 'distill.json'}")


@dataclass
class View:
    """Open the browser viewer on a run or a splat file (optionally beside a second run)."""

    target: Positional[Path]
    """Run directory, splat file (3DGS .ply, .compressed.ply, .spz, .splat, .sog, or a SOG
    folder), 3DGS output folder (its latest .ply, and its
    cameras.json for the first view and the frustums), or gsplat's results folder or
    checkpoint, or a splatfacto run folder or checkpoint (in its dataset's world, with its
    cameras, when that dataset is here)."""
    other: Positional[Path | None] = None
    """Optional second run to compare side by side."""
    scene: Path | None = None
    """A splat file's dataset, in whose world units it is: its training cameras and photos
    go on the frustums (as `fieldkit distill --scene`)."""
    downscale: int = 1
    """Image downscale of --scene's photos."""
    ply_transform: Path | None = None
    """A splat file's frame, as for `fieldkit distill`: nerfstudio's dataparser_transforms.json
    or `gsplat`."""
    host: str = "127.0.0.1"
    """Interface to bind; keep 127.0.0.1 unless others must reach it."""
    port: int = 8080
    """Port to serve on."""
    token: str | None = None
    """Access token required by the browser (recommended with a non-local host)."""
    crop: Crop = None
    """Start with the crop box X0 Y0 Z0 X1 Y1 Z1 on (box coordinates; the Render panel's Crop
    box folder changes it)."""

    def run(self) -> None:
        from fieldkit.render.crop import CropBox
        from fieldkit.viewer import require_viser

        require_viser()
        from fieldkit.viewer.config import ViewerConfig
        from fieldkit.viewer.server import serve

        CropBox.from_flat(self.crop)   # a one-line error before the server starts
        try:
            serve(self.target, self.other, ViewerConfig(host=self.host, port=self.port,
                                                        token=self.token, crop=self.crop),
                  scene=self.scene, downscale=self.downscale, ply_transform=self.ply_transform)
        except KeyboardInterrupt:
            pass


@dataclass
class SceneInfo:
    """Print a scene's format, images per split, resolution, cameras, normalisation, points."""

    scene: Positional[Path]
    """Scene folder."""
    json: bool = False
    """Print machine-readable JSON instead of text."""

    def run(self) -> None:
        from fieldkit.data.info import format_summary, scene_summary

        info = scene_summary(self.scene)
        print(json.dumps(info, indent=2) if self.json else format_summary(info))


@dataclass
class SceneDemo:
    """Generate the built-in synthetic demo scene (Blender format) into a folder."""

    out: Positional[Path]
    """Folder to write."""
    size: int = 96
    """Image width and height in pixels."""
    seed: int = 0
    """Random seed for the camera positions."""

    def run(self) -> None:
        from fieldkit.data.demo import generate_demo_scene

        print(f"wrote {generate_demo_scene(self.out, size=self.size, seed=self.seed)}")


@dataclass
class Doctor:
    """Report the compute devices and accelerated backends available here."""

    def run(self) -> None:
        from fieldkit.doctor import report

        print(report())


SceneCommands = Union[
    Annotated[SceneInfo, tyro.conf.subcommand("info", description=SceneInfo.__doc__)],
    Annotated[SceneDemo, tyro.conf.subcommand("demo", description=SceneDemo.__doc__)],
]

@dataclass
class SceneGroup:
    """Inspect a scene folder, or generate the built-in demo scene."""

    command: tyro.conf.OmitSubcommandPrefixes[SceneCommands]

    def run(self) -> None:
        self.command.run()


COMMANDS = {
    "train": Train, "eval": Eval, "render": Render, "export": Export, "distill": Distill,
    "view": View,
    "scene": SceneGroup,
    "doctor": Doctor,
}


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, FieldkitWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fieldkit`` console script. Returns the exit code."""
    warnings.showwarning = _show_warning
    command = tyro.extras.subcommand_cli_from_dict(
        COMMANDS, prog="fieldkit", args=argv,
        description="fieldkit: train, view, convert and export neural 3D scenes.")
    try:
        command.run()
    except FieldkitError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
