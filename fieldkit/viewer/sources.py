"""Source: one model the viewer shows, with what it needs around it (box, cameras, run folder).

A source is built from a run directory (``from_run``), a 3DGS .ply file (``from_ply``), a
live trainer (``from_trainer``) or a live distillation's student and teacher
(``from_distillation``). Every source renders through the representation protocol
(``model.render(cameras, background) -> {"rgb", "depth", "alpha"}`` [H, W, C]); the viewer
never imports a model class to draw it.
"""
from __future__ import annotations

import copy
import math
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fieldkit.data.cameras import Cameras
from fieldkit.data.normalize import Normalisation
from fieldkit.encoders.hashgrid_fast import compile_for_inference
from fieldkit.errors import FieldkitError, warn
from fieldkit.render.crop import CropBox, crop_splat_params, cropped_volume

BACKGROUND_COLORS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}


@dataclass
class Source:
    """A model to show."""

    label: str
    """Name shown in the GUI (run folder or file name)."""
    model: torch.nn.Module
    """Any registered fieldkit model (box coordinates)."""
    run_dir: Path | None = None
    """Run folder (None for a bare .ply file)."""
    normalisation: Normalisation | None = None
    """World -> box transform of the run (None: the file's own coordinates are shown)."""
    cameras: Cameras | None = None
    """Training cameras in box coordinates (frustums, initial view, camera paths)."""
    scene_path: Path | None = None
    """Scene folder of the run (thumbnails), when it still exists."""
    downscale: int = 1
    """The run's image downscale."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Default background colour (the run's evaluation background)."""
    ply_path: Path | None = None
    """The .ply file of a ``from_ply`` source."""
    ply_options: dict = field(default_factory=dict)
    """How a ``from_ply`` source was placed (its scene, downscale and ply_transform as given):
    exports open the file again the same way (``fieldkit/export/subject.py``)."""
    origin: np.ndarray | None = None
    """[3] centre of a .ply's opaque Gaussians, in its own coordinates (None: the box origin)."""
    trainer: object | None = None
    """The live Trainer of a ``from_trainer`` source."""
    nerfstudio_frame: Normalisation | None = None
    """World -> nerfstudio's dataparser frame, for Gaussians nerfstudio trained and their
    distilled students: where nerfstudio's camera paths are (``from_nerfstudio``)."""
    lock: threading.RLock = field(default_factory=threading.RLock)
    """Held while rendering, so a video, a snapshot and the view never interleave."""
    _crop_cache: tuple = (None, None, None)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_run(cls, run_dir: Path) -> Source:
        from fieldkit.data.scene import load_cameras
        from fieldkit.train.run import load_model, read_config

        run_dir = Path(run_dir)
        cfg = read_config(run_dir)
        model = load_model(run_dir)
        model.eval()
        compile_for_inference(model, background=True)
        name = cfg.get("train", {}).get("background", "white")
        cameras = scene_path = None
        from fieldkit.distill.views import CAMERAS_FILE, train_cameras
        from fieldkit.train.pose_opt import POSES_FILE

        try:
            cams, splits, _ = load_cameras(cfg["scene"], downscale=cfg.get("downscale", 1))
            cameras, scene_path = cams[splits["train"]], Path(cfg["scene"])
            if (run_dir / POSES_FILE).is_file():   # --pose-opt: where training moved them
                cameras = train_cameras(run_dir, cfg)[0]
        except FieldkitError as e:
            if (run_dir / CAMERAS_FILE).is_file():  # the cameras the run saved
                cameras = train_cameras(run_dir, cfg)[0]
            else:
                warn(f"the scene of {run_dir} could not be read ({e}); no training cameras "
                     "shown")
        frame = cfg.get("nerfstudio_frame")
        return cls(label=run_dir.name, model=model, run_dir=run_dir,
                   normalisation=Normalisation.from_dict(cfg["normalisation"]),
                   cameras=cameras, scene_path=scene_path, downscale=cfg.get("downscale", 1),
                   background=BACKGROUND_COLORS.get(name, (1.0, 1.0, 1.0)),
                   nerfstudio_frame=Normalisation.from_dict(frame) if frame else None)

    @classmethod
    def from_ply(cls, path: Path, label: str | None = None, scene: Path | None = None,
                 downscale: int = 1, ply_transform: Path | None = None) -> Source:
        """A 3DGS .ply in its own coordinates, with the cameras of the 3DGS output folder it
        lies in when there is a cameras.json (``fieldkit/splats/gs_folder.py``): they give the
        first view, the orbit centre and the frustums. gsplat and splatfacto checkpoints (and
        their folders' .ply) are in their dataset's world with its cameras when it is here, as
        is any splat file given ``scene`` (and ``ply_transform`` when it is in another frame;
        ``fieldkit/splats/foreign.py``)."""
        from fieldkit.splats.model import SplatConfig, SplatModel
        from fieldkit.splats.frame import splat_normalisation
        from fieldkit.splats.foreign import antialiased_of, dataset_world, read_splats
        from fieldkit.splats.ply import sh_degree_of

        options = {"scene": scene, "downscale": downscale, "ply_transform": ply_transform}
        params = read_splats(path)
        if len(params["means"]) == 0:
            raise FieldkitError(f"{path} holds no Gaussians; pass a non-empty 3DGS .ply file")
        params, scene, downscale, ns_frame = dataset_world(Path(path), params, scene,
                                                           downscale, ply_transform)
        model = SplatModel(SplatConfig(sh_degree=sh_degree_of(params)))
        model.config.render.antialiased = antialiased_of(Path(path))
        model.set_gaussians(params)
        frame = splat_normalisation(params["means"], params["opacities"])  # opaque ones
        model.config.render.bound = max(1.0 / frame.scale, 1e-3)
        model.eval()
        if scene is not None:   # in their dataset's world (given, or named by their folder)
            cameras, scene_path = _scene_cameras(scene, downscale), Path(scene)
        else:
            cameras, scene_path, downscale = _gs_cameras_for(Path(path))
        return cls(label=label or Path(path).name, model=model, ply_path=Path(path),
                   ply_options=options,
                   origin=np.asarray(frame.center, dtype=np.float64), cameras=cameras,
                   scene_path=scene_path, downscale=downscale, nerfstudio_frame=ns_frame)

    @classmethod
    def from_trainer(cls, trainer) -> Source:
        scene = trainer.scene
        # no compile_for_inference here: its 5-30 s of compilation would take training's CPU
        return cls(label=Path(trainer.run_dir).name, model=trainer.model,
                   run_dir=Path(trainer.run_dir), normalisation=scene.normalisation,
                   cameras=scene.cameras[scene.split("train")], scene_path=Path(scene.root),
                   downscale=scene.downscale,
                   background=BACKGROUND_COLORS.get(trainer.eval_background, (1.0, 1.0, 1.0)),
                   trainer=trainer)

    @classmethod
    def from_distillation(cls, job) -> list[Source]:
        """[student, teacher] of a live ``fieldkit/distill/run.py`` ``Distillation``: both in the
        student's box (a .ply teacher as it was normalised to be distilled), with the teacher's
        training cameras, so that the viewer's comparison lines them up."""
        tcfg, teacher = job.source.config, job.source
        scene = tcfg.get("scene")
        common = dict(normalisation=job.normalisation, cameras=job.cameras,
                      scene_path=Path(scene) if scene and Path(scene).is_dir() else None,
                      downscale=int(tcfg.get("downscale", 1)),
                      background=BACKGROUND_COLORS.get(job.trainer.eval_background,
                                                       (1.0, 1.0, 1.0)))
        name = teacher.path.name
        return [cls(label=f"{job.out.name} (student)", model=job.student, run_dir=job.out,
                    trainer=job.trainer, **common),
                cls(label=f"{name} (teacher)", model=teacher.model,
                    run_dir=None if teacher.is_ply else teacher.path,
                    ply_path=teacher.model_file if teacher.is_ply else None, **common)]

    def from_nerfstudio(self, cams: Cameras) -> Cameras:
        """Cameras in nerfstudio's frame (a camera_path.json of its viewer) -> the coordinates
        shown: a run's box, or a splat file's own (its dataset's world)."""
        if self.nerfstudio_frame is None:
            raise FieldkitError(f"{self.label} was not trained by nerfstudio, so a nerfstudio "
                                "camera path has no frame here; the viewer loads paths it "
                                "saved (fieldkit's frame files)")
        world = cams.to_world(self.nerfstudio_frame)
        return world if self.normalisation is None else world.to_box(self.normalisation)

    # ------------------------------------------------------------------ facts
    @property
    def kind(self) -> str:
        return getattr(self.model, "kind", "unknown")

    @property
    def is_splat(self) -> bool:
        return self.kind == "splat"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def version(self) -> int:
        """Changes whenever the model does (the training step of a live source)."""
        return int(getattr(self.trainer, "step_count", 0))

    def bound(self) -> float:
        """Half-size of the model's box (a .ply: of the box around most of its opaque
        Gaussians, ``fieldkit/splats/frame.py``)."""
        return float(self.model.config.render.bound)

    def box_center(self) -> np.ndarray:
        """[3] centre of the model's box: the origin, or a .ply's ``origin``."""
        return np.zeros(3) if self.origin is None else self.origin.copy()

    def look_at(self) -> np.ndarray:
        """[3] a sensible orbit centre: where the training cameras look, else the box centre
        (a .ply: the median opaque Gaussian)."""
        if self.cameras is not None:
            from fieldkit.export.paths import orbit_center

            return orbit_center(self.cameras)
        return self.box_center()

    def up(self) -> np.ndarray:
        """[3] the view's up direction: +z in a run's box (its normalisation turns the capture
        upright); for a .ply with cameras, their mean up (a COLMAP world's up is anything)."""
        if self.normalisation is None and self.cameras is not None and len(self.cameras):
            up = -self.cameras.c2w[:, :3, 1].double().mean(0).numpy()   # OpenCV y is down
            if np.linalg.norm(up) > 0.3:
                return up / np.linalg.norm(up)
        return np.array([0.0, 0.0, 1.0])

    def home_pose(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(position [3], look-at [3], vertical fov radians) of the initial view: the first
        training camera, else a view from outside the box."""
        target = self.look_at()
        if self.cameras is not None and len(self.cameras):
            c = self.cameras
            fov = 2 * math.atan(0.5 * float(c.height[0]) / float(c.K[0, 1, 1]))
            return c.positions[0].double().numpy(), target, fov
        r = 2.5 * self.bound()
        return target + np.array([r, -r, 0.6 * r]), target, math.radians(50)

    # ------------------------------------------------------------------ rendering
    @torch.no_grad()
    def render(self, camera: Cameras, background: Tensor, crop: CropBox | None = None,
               step_scale: float = 1.0) -> dict[str, Tensor]:
        """rgb [H, W, 3], depth [H, W, 1], alpha [H, W, 1] float on the CPU for camera 0.
        ``step_scale`` > 1 marches volumetric models with that many times longer steps (fast
        previews; the composite stays an estimate of the same integral)."""
        with self.lock:
            model = self.model
            was_training = model.training
            model.eval()
            rc = getattr(model.config, "render", None)
            coarse = step_scale != 1.0 and hasattr(rc, "render_steps")
            try:
                if coarse:
                    model.config.render = replace(rc, render_steps=max(
                        16, round(rc.render_steps / step_scale)))
                if self.is_splat and crop is not None:
                    model = self._cropped_splats(crop)
                with cropped_volume(model, None if self.is_splat else crop):
                    out = model.render(camera.to(self.device), background.to(self.device))
            finally:
                if coarse:
                    self.model.config.render = rc
                if was_training:
                    self.model.train()
        return {k: out[k].float().cpu() for k in ("rgb", "depth", "alpha")}

    def _cropped_splats(self, crop: CropBox):
        from fieldkit.splats.model import SplatModel

        key = (crop, self.version, self.model.num_gaussians)
        if self._crop_cache[0] != key:
            sub = SplatModel(copy.deepcopy(self.model.config))
            sub.set_gaussians(crop_splat_params(self.model.export_params(), crop))
            sub.active_sh_degree = self.model.active_sh_degree
            self._crop_cache = (key, sub.to(self.device).eval(), None)
        return self._crop_cache[1]

    def splats_for_browser(self, crop: CropBox | None = None) -> dict[str, np.ndarray]:
        """The Gaussians as viser wants them: centers [N, 3], covariances [N, 3, 3], rgbs
        [N, 3] (base colour, SH degree 0) and opacities [N, 1], float32, box coordinates."""
        from fieldkit.export.web_page import browser_splats

        with self.lock:
            p = crop_splat_params(self.model.export_params(), crop)
        return browser_splats(p)

    def snapshot(self) -> Source:
        """A copy with a frozen copy of the model (videos and exports of a live source run on
        it while training goes on). Call it between training steps."""
        with self.lock:
            model = copy.deepcopy(self.model).eval()
        return Source(label=self.label, model=model, run_dir=self.run_dir,
                      normalisation=self.normalisation, cameras=self.cameras,
                      scene_path=self.scene_path, downscale=self.downscale,
                      background=self.background, ply_path=self.ply_path,
                      ply_options=self.ply_options, origin=self.origin)


def _gs_cameras_for(ply: Path) -> tuple[Cameras | None, Path | None, int]:
    """(cameras in world units, scene folder, downscale) of the 3DGS output folder ``ply`` lies
    in: its dataset's training cameras when its cfg_args names a scene folder that is here
    (their photos then go on the frustums), else its cameras.json's; (None, None, 1) when it
    has neither."""
    from fieldkit.splats.gs_folder import (cameras_json_for, dataset_of, read_cameras_json,
                                           world_cameras)

    path = cameras_json_for(ply)
    if path is None:
        return None, None, 1
    dataset = dataset_of(path.parent)
    if dataset is not None:
        try:
            return _scene_cameras(*dataset), dataset[0], dataset[1]
        except FieldkitError as e:
            warn(f"the scene {dataset[0]} named by {path.parent / 'cfg_args'} could not be read "
                 f"({e}); its cameras.json is used")
    return world_cameras(read_cameras_json(path), torch.float32), None, 1


def _scene_cameras(scene: Path, downscale: int) -> Cameras:
    """The training cameras of ``scene`` at ``downscale``, in world units."""
    from fieldkit.data.scene import load_cameras

    cams, splits, norm = load_cameras(scene, downscale=downscale)
    return cams[splits["train"]].to_world(norm)
