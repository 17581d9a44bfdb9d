"""`fieldkit render RUN`: a video along a camera path (orbit, spiral, a smooth path through the
training cameras, the test views or a JSON file), of a run or of a splat file
(``fieldkit/export/subject.py``)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from fieldkit.data.cameras import Cameras
from fieldkit.data.normalize import Normalisation
from fieldkit.data.scene import load_cameras
from fieldkit.encoders.hashgrid_fast import compile_for_inference
from fieldkit.errors import FieldkitError
from fieldkit.export.paths import load_path_json, orbit_path, spiral_path
from fieldkit.export.video import colorize_depth, to_uint8, write_video
from fieldkit.progress import progress_iter
from fieldkit.render.crop import CropBox, crop_model
from fieldkit.export.subject import open_subject

COMPILE_MIN_PIXELS = 1 << 22
"""Videos of at least this many pixels in all compile hash grids for CPU rendering first."""


def camera_path(source, path: str, frames: int, width: int | None,
                height: int | None) -> Cameras:
    """Cameras (box coordinates) of a named path or a camera-path JSON file, for ``source`` (a
    run folder or an export ``Subject``). A splat file's JSON path is in the file's own
    coordinates, as the viewer shows the file and saves its paths. A nerfstudio
    camera_path.json of Gaussians nerfstudio trained (a splatfacto run, its exported .ply with
    its dataparser_transforms.json, a student distilled from them) is in nerfstudio's
    dataparser frame, where its viewer made it (the config's ``nerfstudio_frame``)."""
    subject = open_subject(source)
    if path == "test":
        cfg = subject.config
        if not cfg.get("scene") or not Path(cfg["scene"]).is_dir():
            raise FieldkitError(f"--path test needs the test cameras of the run's scene, which "
                                f"is not on disk ({cfg.get('scene') or 'none'}); use orbit, "
                                "spiral or interp (or give a splat file its --scene)")
        cameras, splits, _ = load_cameras(cfg["scene"], downscale=cfg["downscale"])
        test = cameras[splits.get("test", splits["train"])]
        if width or height:
            w = torch.full((len(test),), width or int(test.width[0]))
            h = torch.full((len(test),), height or int(test.height[0]))
            test = test.resized(w, h)
        return test
    train = subject.cameras
    if path == "orbit":
        return orbit_path(train, frames, width, height)
    if path == "spiral":
        return spiral_path(train, frames, width, height)
    if path == "interp":
        from fieldkit.export.interp import interpolated_path

        return interpolated_path(train, frames, width=width, height=height)
    if path.endswith(".json"):
        frame = subject.config.get("nerfstudio_frame")
        if subject.is_file or frame:
            norm = subject.normalisation
            own = load_path_json(Path(path), train.to_world(norm), width, height,
                                 Normalisation.from_dict(frame) if frame else None)
            return own.to_box(norm)
        return load_path_json(Path(path), train, width, height)
    raise FieldkitError(f"--path {path!r} is not a path: use orbit, spiral, interp, test or a "
                        ".json file")


def with_fov(cams: Cameras, fov_deg: float) -> Cameras:
    """``cams`` with a vertical field of view of ``fov_deg`` degrees (square pixels, principal
    point at the image centre)."""
    if not 0 < fov_deg < 180:
        raise FieldkitError(f"--fov must be between 0 and 180 degrees, not {fov_deg:g}")
    K = cams.K.clone()
    f = 0.5 * cams.height.to(K.dtype) / math.tan(math.radians(fov_deg) / 2)
    K[:, 0, 0], K[:, 1, 1] = f, f
    K[:, 0, 2], K[:, 1, 2] = cams.width.to(K.dtype) / 2, cams.height.to(K.dtype) / 2
    return Cameras(cams.c2w, K, cams.width, cams.height, None)


def render_video(source, out: Path, path: str = "orbit", frames: int = 120,
                 fps: int = 30, width: int | None = None, height: int | None = None,
                 depth: bool = False, output: str | None = None,
                 fov: float | None = None, crop: CropBox | None = None,
                 scene: Path | None = None, downscale: int = 1,
                 ply_transform: Path | None = None) -> Path:
    """Render the frames of a camera path and encode them. ``source``: a run folder, or a
    splat file or another trainer's folder (opened with ``scene``, ``downscale`` and
    ``ply_transform`` as ``open_subject`` opens it). ``output``: rgb, depth (colour mapped) or
    both (side by side); ``depth=True`` is the same as ``output="both"``. ``fov``: vertical
    field of view in degrees (default: the path's own). ``crop``: show only what lies in this
    box (a run's box coordinates; a splat file's own, ``Subject.take_crop``)."""
    output = output or ("both" if depth else "rgb")
    if output not in ("rgb", "depth", "both"):
        raise FieldkitError(f"--output must be rgb, depth or both, not {output!r}")
    subject = open_subject(source, scene, downscale, ply_transform)
    model = crop_model(subject.model, subject.take_crop(crop), subject.label)
    model.eval()
    bg = torch.tensor(subject.background)
    cams = camera_path(subject, path, frames, width, height)
    if fov is not None:
        cams = with_fov(cams, fov)
    if len(cams) * int(cams.width[0]) * int(cams.height[0]) >= COMPILE_MIN_PIXELS:
        compile_for_inference(model)   # hash grids on the CPU: a one-off cost that pays here

    def frames_iter():
        for i in progress_iter(range(len(cams)), total=len(cams), desc="rendering"):
            res = model.render(cams[i], bg)
            parts = []
            if output in ("rgb", "both"):
                parts.append(to_uint8(res["rgb"]))
            if output in ("depth", "both"):
                parts.append(colorize_depth(res["depth"][..., 0].numpy(),
                                            res["alpha"][..., 0].numpy()))
            yield np.concatenate(parts, axis=1)

    write_video(Path(out), frames_iter(), fps=fps)
    return Path(out)
