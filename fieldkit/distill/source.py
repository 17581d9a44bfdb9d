"""What a distillation starts from: a fieldkit run, or a 3D Gaussian Splatting .ply file.

A run brings its model, its config (scene, downscale, normalisation) and its training cameras.
A .ply written by any 3DGS trainer (fieldkit, gsplat, nerfstudio's splatfacto, the original
3DGS code) brings Gaussians in world units and nothing else. Its views and its box come from
the scene the splats were trained on, when one is given (``--scene``: that scene's training
cameras, normalisation and test photos). Otherwise they come from the Gaussians themselves: a
box that holds most of them (``fieldkit/splats/frame.py``) and a sphere of views around it.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from fieldkit.data.cameras import Cameras
from fieldkit.errors import FieldkitError, warn
from fieldkit.splats.frame import opaque_centres, splat_normalisation

SPHERE_VIEWS = 64
"""Views around the box of a .ply teacher without a scene (``sphere_cameras``)."""
FRAME_SHARE = 0.8
"""Those views frame the sphere that holds this share of the opaque Gaussians' centres
(``framing_radius``)."""


@dataclass
class TeacherSource:
    """A teacher ready to distil: its model and what its run would have said about it."""

    path: Path
    """The run directory or .ply file given."""
    model: torch.nn.Module
    """The teacher, in box coordinates, on its device, frozen."""
    config: dict
    """Its run config (``config.json``'s keys that distillation reads: scene, downscale,
    normalisation, model)."""
    cameras: Cameras
    """Its training cameras (box coordinates), or views standing in for them."""
    camera_source: str
    """Where ``cameras`` came from: run, scene or sphere."""
    train_seconds: float | None
    """Seconds the teacher trained for, when known (the default budget is a share of it)."""
    model_file: Path
    """The file the teacher's model lives in (its size is reported)."""

    @property
    def is_ply(self) -> bool:
        return self.path.suffix.lower() == ".ply"


def teacher_train_seconds(run_dir: Path) -> float | None:
    """Seconds the teacher trained for (its log's last ``elapsed``), if known."""
    log = Path(run_dir) / "log.jsonl"
    if not log.is_file():
        return None
    lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
    return float(json.loads(lines[-1]).get("elapsed", 0)) if lines else None


def open_teacher(path: Path, device: str = "cpu", scene: Path | None = None,
                 downscale: int = 1) -> TeacherSource:
    """The teacher at ``path``: a run directory, or a 3DGS .ply file (in the world units of
    ``scene`` when given, whose training cameras at ``downscale`` then give the views)."""
    from fieldkit.distill.views import train_cameras
    from fieldkit.train.run import load_model, read_config

    path = Path(path)
    if path.suffix.lower() == ".ply":
        return _open_ply(path, device, scene, downscale)
    if scene is not None:
        raise FieldkitError("--scene is for a .ply teacher; a run brings its own scene")
    config = read_config(path)
    model = load_model(path, device=device)
    cameras, source = train_cameras(path, config)
    return TeacherSource(path, model, config, cameras, source, teacher_train_seconds(path),
                         path / "model.safetensors")


def framing_radius(box: dict[str, torch.Tensor]) -> float:
    """Distance (box units) from the box centre at which a sphere holding FRAME_SHARE of the
    opaque Gaussians' centres fills a sphere view's field of view; at most the default."""
    from fieldkit.distill.views import DEFAULT_FOV_DEG, DEFAULT_RADIUS

    core = float(opaque_centres(box["means"], box["opacities"]).norm(dim=-1).quantile(FRAME_SHARE))
    return min(DEFAULT_RADIUS, core / math.sin(math.radians(DEFAULT_FOV_DEG / 2)))


def _open_ply(path: Path, device: str, scene: Path | None, downscale: int) -> TeacherSource:
    from fieldkit.distill.views import sphere_cameras
    from fieldkit.splats.model import SplatConfig, SplatModel
    from fieldkit.splats.ply import read_splat_ply, sh_degree_of
    from fieldkit.splats.transform import splats_to_box

    if not path.is_file():
        raise FieldkitError(f"{path} does not exist; pass a run directory or a 3DGS .ply file")
    params = read_splat_ply(path)
    if len(params["means"]) == 0:
        raise FieldkitError(f"{path} holds no Gaussians; pass a non-empty 3DGS .ply file")
    if scene is None:
        norm = splat_normalisation(params["means"], params["opacities"])
        box = splats_to_box(params, norm)
        cameras = sphere_cameras(SPHERE_VIEWS, norm.bound, radius=framing_radius(box))
        source, scene_path = "sphere", ""
    else:
        from fieldkit.data.scene import load_cameras

        cams, splits, norm = load_cameras(scene, downscale=downscale)
        cameras, source, scene_path = cams[splits["train"]], "scene", str(Path(scene).resolve())
        box = splats_to_box(params, norm)
        weight = torch.sigmoid(box["opacities"])
        inside = (box["means"].abs() <= norm.bound).all(-1)
        share = float((weight * inside).sum() / weight.sum().clamp_min(1e-12))
        if share < 0.5:
            warn(f"only {100 * share:.0f}% of the opacity of {path.name} lies in the box of "
                 f"{scene}; is the .ply in that scene's world units?")
    model = SplatModel(SplatConfig(sh_degree=sh_degree_of(params)))
    model.config.render.bound = float(norm.bound)
    model.set_gaussians(box)
    model = model.to(device)
    config = {"scene": scene_path, "scene_format": None, "downscale": downscale,
              "normalisation": norm.as_dict(),
              "model": {"kind": "splat", "config": asdict(model.config)}}
    return TeacherSource(path, model, config, cameras, source, None, path)
