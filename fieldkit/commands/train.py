"""`fieldkit train`."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fieldkit.commands.common import Positional, report_eval, serve_until_ctrl_c
from fieldkit.model_options import ModelOptions


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
    pose_opt: bool = False
    """Refine the training cameras' poses with the scene (nerfstudio's camera optimiser,
    gsplat's pose_opt), for captures whose poses are a little off; the corrections go to
    RUN/poses.json and the corrected cameras to RUN/cameras.safetensors. Exact poses lose a
    little by it (demo scene, 600-800 steps: 0.3-1.4 dB)."""
    pose_lr: float | None = None
    """--pose-opt's peak learning rate (default: 1e-3, splat 3e-3)."""
    pose_start: float | None = None
    """--pose-opt's start, a fraction of the budget: the corrections learn from there on
    (default: tri-plane 0.25, the others 0)."""
    appearance: Literal["off", "affine", "bilateral"] = "off"
    """Learn a colour transform per training photo, for captures whose photos differ in
    exposure or white balance (affine: one per photo; bilateral: gsplat's bilateral grid,
    which also follows vignetting and tone curves). The scene keeps the photos' common look;
    `fieldkit eval` also reports the colour-corrected PSNR."""
    appearance_lr: float | None = None
    """--appearance's peak learning rate (default 1e-2)."""
    init: Path | None = None
    """--model splat: start from this splat file (.ply, .spz, .splat, .ksplat, .sog; the scene's
    world units) instead of the scene's sparse points or random points."""
    checkpoint_every: float = 60.0
    """Seconds of training between checkpoints in RUN/checkpoint (one is also written when
    training ends, and on Ctrl-C)."""
    weights: Literal["float32", "float16"] = "float32"
    """Precision of the weights in RUN/model.safetensors (float16: about half the file, renders
    within 0.003 dB of float32 on the demo; checkpoints stay float32)."""

    def run(self) -> None:
        from fieldkit.train.config import TrainConfig
        from fieldkit.train.run import train

        config = TrainConfig(max_steps=self.max_steps, max_time=self.max_time,
                             background=self.background, seed=self.seed, lr=self.lr,
                             distortion_weight=self.distortion_weight, weights=self.weights,
                             pose_opt=self.pose_opt, pose_lr=self.pose_lr,
                             pose_start=self.pose_start,
                             appearance=self.appearance, appearance_lr=self.appearance_lr,
                             checkpoint_every=self.checkpoint_every)
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
        report_poses(result.run_dir)
        if result.interrupted:
            print(f"interrupted: checkpoint saved; continue with `fieldkit train {self.scene} "
                  f"--out {result.run_dir} --resume`", file=sys.stderr)
            raise SystemExit(130)
        if self.final_eval:
            report_eval(result.run_dir)
        if self.video:
            from fieldkit.export.render import render_video

            out = render_video(result.run_dir, result.run_dir / "renders" / "orbit.mp4",
                               frames=60, fps=30)
            print(f"video      {out}")
        if live is not None:
            serve_until_ctrl_c(live)


def report_poses(run_dir: Path) -> None:
    """One line on the pose corrections of a --pose-opt run (nothing for other runs)."""
    import json

    from fieldkit.train.pose_opt import POSES_FILE

    path = Path(run_dir) / POSES_FILE
    if path.is_file():
        p = json.loads(path.read_text())
        print(f"poses      {POSES_FILE}: training cameras moved by {p['mean_rotation_deg']:.2f} "
              f"deg and {p['mean_translation']:.3g} scene units on average (largest "
              f"{p['max_rotation_deg']:.2f} deg, {p['max_translation']:.3g})")
