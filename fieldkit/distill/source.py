"""What a distillation starts from: a fieldkit run, or a 3D Gaussian Splatting .ply file.

A run brings its model, its config (scene, downscale, normalisation) and its training cameras.
A .ply written by any 3DGS trainer (fieldkit, gsplat, nerfstudio's splatfacto, the original
3DGS code) brings Gaussians in world units. Its views and its box come from, in this order:
- the scene the splats were trained on, when one is given (``--scene``: that scene's training
  cameras, normalisation and test photos);
- the dataset named by the cfg_args of the 3DGS output folder the .ply lies in (the original
  trainer's layout, ``fieldkit/splats/gs_folder.py``; a folder can be given for its latest
  .ply), when that scene folder is on this machine: as with ``--scene``;
- that folder's cameras.json: its cameras give the views and, with the Gaussians, the box;
- the Gaussians alone: a box that holds most of them (``fieldkit/splats/frame.py``) and a
  sphere of views around it (DEFAULT_SIZE pixels a side, divided by the downscale).
A checkpoint of gsplat's simple_trainer or of nerfstudio's splatfacto, or the folder it lies
in, is read as that .ply would be, after its Gaussians are brought back from that trainer's
frame into the world of the dataset its folder names, or of ``--scene``, which then gives the
views as above (``fieldkit/splats/foreign.py``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from fieldkit.data.cameras import Cameras
from fieldkit.data.normalize import Normalisation
from fieldkit.errors import FieldkitError, warn
from fieldkit.splats.foreign import SPLAT_FILES
from fieldkit.splats.frame import camera_normalisation, opaque_centres, splat_normalisation

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
    """Where ``cameras`` came from: run, scene, 3dgs (a cameras.json) or sphere."""
    train_seconds: float | None
    """Seconds the teacher trained for, when known (the default budget is a share of it)."""
    model_file: Path
    """The file the teacher's model lives in (its size is reported)."""

    @property
    def is_ply(self) -> bool:
        """A teacher read from a splat file (a .ply, a gsplat or splatfacto checkpoint, given as
        a file or as the folder it lies in), not from a run."""
        return self.model_file.suffix.lower() in SPLAT_FILES


def teacher_train_seconds(run_dir: Path) -> float | None:
    """Seconds the teacher trained for (its log's last ``elapsed``), if known."""
    from fieldkit.train.run import last_log_entry

    last = last_log_entry(run_dir)
    return None if last is None else float(last.get("elapsed", 0))


def open_teacher(path: Path, device: str = "cpu", scene: Path | None = None,
                 downscale: int = 1, ply_transform: Path | None = None) -> TeacherSource:
    """The teacher at ``path``: a run directory, a 3DGS .ply file or a 3DGS output folder (in
    the world units of ``scene`` when given, whose training cameras at ``downscale`` then give
    the views; else its folder's cameras.json at ``downscale``). ``ply_transform``: the
    nerfstudio dataparser_transforms.json whose frame a .ply is in (``fieldkit/splats/
    dataparser.py``)."""
    from fieldkit.distill.views import train_cameras
    from fieldkit.splats.foreign import latest_in
    from fieldkit.train.run import load_model, read_config

    path = Path(path)
    if path.suffix.lower() in SPLAT_FILES:
        return _open_ply(path, device, scene, downscale, ply_transform=ply_transform)
    ply = latest_in(path)   # another trainer's folder
    if ply is not None:
        return _open_ply(ply, device, scene, downscale, given=path, ply_transform=ply_transform)
    if ply_transform is not None:
        raise FieldkitError("--ply-transform is for a .ply teacher; a run is in its own box")
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


def _open_ply(path: Path, device: str, scene: Path | None, downscale: int,
              given: Path | None = None, ply_transform: Path | None = None) -> TeacherSource:
    from fieldkit.distill.views import DEFAULT_SIZE, sphere_cameras
    from fieldkit.splats.gs_folder import cameras_json_for, dataset_of
    from fieldkit.splats.foreign import antialiased_of, dataset_world, read_splats
    from fieldkit.splats.model import SplatConfig, SplatModel
    from fieldkit.splats.ply import sh_degree_of
    from fieldkit.splats.transform import splats_to_box

    if not path.is_file():
        raise FieldkitError(f"{path} does not exist; pass a run directory or a 3DGS .ply file")
    params = read_splats(path)
    if len(params["means"]) == 0:
        raise FieldkitError(f"{path} holds no Gaussians; pass a non-empty 3DGS .ply file")
    params, scene, downscale, frame = dataset_world(path, params, scene, downscale,
                                                    ply_transform)
    cameras_json = cameras_json_for(path) if scene is None else None
    dataset = dataset_of(cameras_json.parent) if cameras_json is not None else None
    if dataset is not None:   # the folder names its dataset and it is here: photos too
        scene, cameras_json = dataset[0], None
        downscale = dataset[1] if downscale == 1 else downscale
    if cameras_json is not None:
        cameras, norm = _gs_cameras(cameras_json, params, downscale)
        box = splats_to_box(params, norm)
        source, scene_path = "3dgs", ""
    elif scene is None:
        norm = splat_normalisation(params["means"], params["opacities"])
        box = splats_to_box(params, norm)
        cameras = sphere_cameras(SPHERE_VIEWS, norm.bound, radius=framing_radius(box),
                                 size=max(16, round(DEFAULT_SIZE / downscale)))
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
                 f"{scene}; is the .ply in that scene's world units? (a splatfacto export is "
                 "not: pass --ply-transform with its run's dataparser_transforms.json; a "
                 "gsplat one neither: pass --ply-transform gsplat)")
    model = SplatModel(SplatConfig(sh_degree=sh_degree_of(params)))
    model.config.render.bound = float(norm.bound)
    model.config.render.antialiased = antialiased_of(path)
    model.set_gaussians(box)
    model = model.to(device)
    config = {"scene": scene_path, "scene_format": None, "downscale": downscale,
              "normalisation": norm.as_dict(),
              "model": {"kind": "splat", "config": asdict(model.config)}}
    if frame is not None:   # nerfstudio's frame: where its camera paths are (export/render.py)
        config["nerfstudio_frame"] = frame.as_dict()
    return TeacherSource(given or path, model, config, cameras, source, None, path)


LARGE_VIEW = 1600
"""A cameras.json view wider than this (at the chosen downscale) prints a hint to downscale."""


def _gs_cameras(path: Path, params: dict[str, torch.Tensor],
                downscale: int) -> tuple[Cameras, Normalisation]:
    """The cameras of a 3DGS cameras.json in the box they and the Gaussians make, at
    ``downscale``."""
    from fieldkit.data.images import downscaled_size
    from fieldkit.splats.gs_folder import read_cameras_json, world_cameras

    cams = read_cameras_json(path)
    norm = camera_normalisation(cams["c2w"], params["means"], params["opacities"])
    box = world_cameras(cams).to_box(norm)
    if downscale > 1:
        sizes = [downscaled_size(int(w), int(h), downscale)
                 for w, h in zip(cams["width"], cams["height"])]
        box = box.resized(torch.tensor([s[0] for s in sizes]), torch.tensor([s[1] for s in sizes]))
    if int(box.width.max()) > LARGE_VIEW:
        warn(f"the cameras in {path} make {int(box.width.max())} px wide views; pass "
             f"--downscale {math.ceil(int(box.width.max()) / LARGE_VIEW)} or more to distil "
             "faster")
    return Cameras(box.c2w.float(), box.K.float(), box.width, box.height), norm
