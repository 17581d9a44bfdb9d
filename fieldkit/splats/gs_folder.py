"""The output folder of the original 3D Gaussian Splatting trainer: its .ply and its cameras.

That trainer writes a model folder::

    MODEL/cameras.json                                  every camera it trained (and tested) on
    MODEL/cfg_args                                      its arguments, the dataset's path among them
    MODEL/point_cloud/iteration_N/point_cloud.ply       the Gaussians after N iterations

``cameras.json`` is a list of ``{"id", "img_name", "width", "height", "position": [3],
"rotation": [3][3], "fx", "fy"}`` in world units: ``position`` is the camera centre,
``rotation`` the camera-to-world rotation in OpenCV axes (x right, y down, z forward), ``fx``
and ``fy`` in pixels of the ``width`` x ``height`` image, the principal point at its centre.
Lens distortion has no place there (that trainer learns from undistorted photos).
``cfg_args`` is the repr of a Python ``argparse.Namespace``: ``Namespace(sh_degree=3,
source_path='/data/garden', model_path='output/garden', images='images', resolution=4,
white_background=False, data_device='cuda', eval=True)``. That trainer keeps the dataset's world
units, so when ``source_path`` is a scene folder on this machine the .ply lies in its world.

fieldkit reads the folder so that a .ply inside one is distilled from the views it was trained
on rather than from a sphere of guesses (``fieldkit/distill/source.py``), and writes it
(``fieldkit export splats RUN --out FOLDER``) so that a fieldkit splat run travels with its
cameras.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import torch

from fieldkit.errors import FieldkitError

CAMERAS_JSON = "cameras.json"
CFG_ARGS = "cfg_args"
PLY_NAME = "point_cloud.ply"
_ITERATION = re.compile(r"^iteration_(\d+)$")
_ARG = re.compile(r"(\w+)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^,()]*)")


def latest_ply(folder: Path) -> Path | None:
    """``FOLDER/point_cloud/iteration_N/point_cloud.ply`` of the largest N, or None when
    ``folder`` is not a 3DGS model folder."""
    found = []
    root = Path(folder) / "point_cloud"
    if root.is_dir():
        for d in root.iterdir():
            m = _ITERATION.match(d.name)
            if m and (d / PLY_NAME).is_file():
                found.append((int(m.group(1)), d / PLY_NAME))
    return max(found)[1] if found else None


def cameras_json_for(ply: Path) -> Path | None:
    """The cameras.json that goes with ``ply``: beside it, or at the top of the 3DGS model
    folder it lies in (``MODEL/point_cloud/iteration_N/point_cloud.ply``); None if neither."""
    ply = Path(ply).resolve()
    candidates = [ply.parent / CAMERAS_JSON]
    if ply.parent.parent.name == "point_cloud":
        candidates.append(ply.parent.parent.parent / CAMERAS_JSON)
    return next((c for c in candidates if c.is_file()), None)


def _number(entry: dict, key: str, fail) -> float:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise fail(f"'{key}' is {value!r}, expected a finite number")
    return float(value)


def read_cameras_json(path: Path) -> dict:
    """The cameras of a 3DGS ``cameras.json``, sorted by image name (the order they were shot
    in, for the usual numbered photos): ``{"c2w": [N, 4, 4], "K": [N, 3, 3]`` float64, OpenCV
    axes, world units; ``"width", "height": [N]`` int64; ``"names": [N]``}. A malformed file
    is a one-line FieldkitError."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FieldkitError(f"{path} could not be read as JSON ({e}); pass the cameras.json a "
                            "3DGS trainer wrote, or remove it") from None
    if not isinstance(data, list) or not data:
        raise FieldkitError(f"{path} is not a list of cameras; expected the cameras.json a 3DGS "
                            "trainer writes")
    rows = []
    for i, entry in enumerate(data):
        def fail(problem: str, i=i) -> FieldkitError:
            return FieldkitError(f"{path}: camera {i}: {problem}; fix or remove the file")

        if not isinstance(entry, dict):
            raise fail("is not an object")
        try:
            pos = np.asarray(entry.get("position"), dtype=np.float64)
            rot = np.asarray(entry.get("rotation"), dtype=np.float64)
        except (TypeError, ValueError):
            raise fail("'position' or 'rotation' is not numeric") from None
        if pos.shape != (3,) or rot.shape != (3, 3):
            raise fail(f"'position' must be 3 numbers and 'rotation' 3x3 (got shapes "
                       f"{pos.shape} and {rot.shape})")
        if not (np.isfinite(pos).all() and np.isfinite(rot).all()):
            raise fail("'position' or 'rotation' is not finite")
        if np.abs(rot @ rot.T - np.eye(3)).max() > 1e-3 or np.linalg.det(rot) < 0:
            raise fail("'rotation' is not a rotation matrix")
        w, h = _number(entry, "width", fail), _number(entry, "height", fail)
        fx, fy = _number(entry, "fx", fail), _number(entry, "fy", fail)
        if w < 1 or h < 1 or w != int(w) or h != int(h):
            raise fail(f"image size {w}x{h} is not a positive whole number of pixels")
        if fx <= 0 or fy <= 0:
            raise fail(f"focal lengths {fx}, {fy} must be positive")
        c2w = np.eye(4)
        c2w[:3, :3], c2w[:3, 3] = rot, pos
        K = np.array([[fx, 0.0, w / 2], [0.0, fy, h / 2], [0.0, 0.0, 1.0]])
        name = str(entry.get("img_name", entry.get("id", i)))
        rows.append((name, i, c2w, K, int(w), int(h)))
    rows.sort(key=lambda r: (r[0], r[1]))
    return {"c2w": np.stack([r[2] for r in rows]), "K": np.stack([r[3] for r in rows]),
            "width": np.array([r[4] for r in rows], dtype=np.int64),
            "height": np.array([r[5] for r in rows], dtype=np.int64),
            "names": [r[0] for r in rows]}


def write_cameras_json(path: Path, c2w: np.ndarray, K: np.ndarray, width: np.ndarray,
                       height: np.ndarray, names: list[str] | None = None) -> Path:
    """Write cameras (c2w [N, 4, 4] OpenCV axes in world units, K [N, 3, 3], sizes [N]) as a
    3DGS ``cameras.json``. Its format keeps the focal lengths only: the principal point is
    read back at the image centre."""
    path = Path(path)
    c2w, K = np.asarray(c2w, dtype=np.float64), np.asarray(K, dtype=np.float64)
    names = names or [f"{i:05d}" for i in range(len(c2w))]
    entries = [{"id": i, "img_name": names[i], "width": int(width[i]), "height": int(height[i]),
                "position": c2w[i, :3, 3].tolist(), "rotation": c2w[i, :3, :3].tolist(),
                "fy": float(K[i, 1, 1]), "fx": float(K[i, 0, 0])} for i in range(len(c2w))]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(entries))
    tmp.replace(path)
    return path


def read_cfg_args(path: Path) -> dict:
    """The arguments in a 3DGS ``cfg_args`` file (each value read as a Python literal, never
    run; values that are not literals are left out). {} when the file is missing or holds
    no Namespace."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return {}
    if not text.strip().startswith("Namespace("):
        return {}
    out = {}
    for key, value in _ARG.findall(text):
        try:
            out[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            continue
    return out


def write_cfg_args(path: Path, source_path: str, model_path: str, sh_degree: int,
                   resolution: int = 1, white_background: bool = False) -> Path:
    """A 3DGS ``cfg_args`` naming the dataset (``source_path``) the model was trained on."""
    args = {"sh_degree": int(sh_degree), "source_path": str(source_path),
            "model_path": str(model_path), "images": "images", "resolution": int(resolution),
            "white_background": bool(white_background), "data_device": "cuda", "eval": True}
    path = Path(path)
    path.write_text("Namespace(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")")
    return path


def dataset_of(folder: Path) -> tuple[Path, int] | None:
    """(scene folder, image downscale) a 3DGS model folder was trained on, from its cfg_args,
    when that folder is on this machine and fieldkit reads it; else None. The downscale is
    the trainer's ``resolution`` when it was a factor (2, 4 or 8), else 1."""
    from fieldkit.data.scene import detect_format
    from fieldkit.errors import SceneError

    args = read_cfg_args(Path(folder) / CFG_ARGS)
    source = args.get("source_path")
    if not isinstance(source, str) or not source or not Path(source).is_dir():
        return None
    try:
        detect_format(Path(source))
    except SceneError:
        return None
    resolution = args.get("resolution")
    return Path(source), (resolution if resolution in (2, 4, 8) else 1)


def world_cameras(cams: dict, dtype: torch.dtype = torch.float64):
    """``read_cameras_json``'s cameras as ``Cameras`` (world units, pinholes)."""
    from fieldkit.data.cameras import Cameras

    return Cameras(torch.from_numpy(cams["c2w"]).to(dtype), torch.from_numpy(cams["K"]).to(dtype),
                   torch.from_numpy(cams["width"]), torch.from_numpy(cams["height"]))
