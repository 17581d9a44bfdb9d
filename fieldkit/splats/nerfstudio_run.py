"""A nerfstudio splatfacto run folder: its Gaussians, its frame and its dataset, without
``ns-export``.

``ns-train splatfacto`` writes ``outputs/EXPERIMENT/splatfacto/TIMESTAMP/``::

    config.yml                          its TrainerConfig (yaml.dump), the dataset among it
    dataparser_transforms.json          world -> nerfstudio's frame (``dataparser.py``)
    nerfstudio_models/step-NNNNNNNNN.ckpt   {"step", "pipeline": state dict, "optimizers", ...}

When the dataset is a COLMAP model read by nerfstudio's COLMAP dataparser, that parser first
turns the COLMAP world (y and z swapped, one negated: COLMAP_AXES); the transforms.json that
``ns-process-data`` writes already holds its poses turned that way.

The pipeline's state dict holds the Gaussians as ``_model.gauss_params.{means, scales, quats,
opacities, features_dc, features_rest}`` in nerfstudio's frame, with the 3DGS conventions (log
scales, opacity logits [N, 1], w-first quaternions; ``features_rest`` [N, K-1, 3]). With SH
degree 0, ``features_dc`` is the colour's logit rather than its SH coefficient. A checkpoint is
read with ``torch.load(weights_only=True)``: tensors and plain values only, no code.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch

from fieldkit.encoders.sh import C0 as SH_C0
from fieldkit.errors import FieldkitError

CONFIG = "config.yml"
TRANSFORMS = "dataparser_transforms.json"
MODELS = "nerfstudio_models"
MAX_SIDE = 1600
"""nerfstudio's automatic downscale keeps the longest image side at most this."""
_CKPT = re.compile(r"^step-(\d+)\.ckpt$")
_KEYS = ("means", "scales", "quats", "opacities", "features_dc", "features_rest")


def run_folder_of(path: Path) -> Path | None:
    """The splatfacto run folder ``path`` is (config.yml beside nerfstudio_models/) or whose
    checkpoint it is; None otherwise."""
    path = Path(path).resolve()
    if not path.is_dir():
        if path.parent.name != MODELS:
            return None
        path = path.parent.parent
    return path if (path / CONFIG).is_file() and (path / MODELS).is_dir() else None


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint of the largest step in ``folder/nerfstudio_models``, or None."""
    found = [(int(m.group(1)), f) for f in (Path(folder) / MODELS).glob("step-*.ckpt")
             if (m := _CKPT.match(f.name))]
    return max(found)[1] if found else None


def read_splatfacto_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Splat params (as ``read_splat_ply`` returns them) of a splatfacto checkpoint, in
    nerfstudio's frame."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FieldkitError(f"{path} does not exist; pass a splatfacto run folder or its "
                            "nerfstudio_models/step-*.ckpt") from None
    except Exception as e:  # noqa: BLE001 - not tensors only, or not a checkpoint at all
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FieldkitError(f"{path} is not a nerfstudio checkpoint that loads as tensors only "
                            f"({first[:160]}); pass the .ply of `ns-export gaussian-splat` "
                            "instead") from None
    state = data.get("pipeline") if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise FieldkitError(f"{path} has no 'pipeline' entry; pass a checkpoint of "
                            "`ns-train splatfacto` (nerfstudio_models/step-*.ckpt)")
    found = {}
    for name, value in state.items():
        key = name.rsplit("gauss_params.", 1)[-1] if "gauss_params." in name else None
        if key in _KEYS and isinstance(value, torch.Tensor):
            found[key] = value.detach().float()
    missing = [k for k in _KEYS if k not in found]
    if len(missing) == len(_KEYS):
        raise FieldkitError(f"{path} holds no Gaussians (no gauss_params); fieldkit reads "
                            "splatfacto runs: a NeRF of nerfstudio is not a splat teacher")
    if missing:
        raise FieldkitError(f"{path}'s gauss_params lack {', '.join(missing)}; pass the .ply of "
                            "`ns-export gaussian-splat` instead")
    n = len(found["means"])
    rest, dc = found["features_rest"], found["features_dc"]
    if dc.dim() == 3:
        dc = dc[:, 0]
    shapes = {"means": (n, 3), "scales": (n, 3), "quats": (n, 4), "dc": (n, 3)}
    for key, value in (("means", found["means"]), ("scales", found["scales"]),
                       ("quats", found["quats"]), ("dc", dc)):
        if tuple(value.shape) != shapes[key]:
            raise FieldkitError(f"{path}: gauss_params {key} has shape {tuple(value.shape)}, "
                                f"expected {shapes[key]}; pass the .ply of `ns-export`")
    if rest.dim() != 3 or rest.shape[0] != n or rest.shape[2] != 3 or \
            math.isqrt(rest.shape[1] + 1) ** 2 != rest.shape[1] + 1:
        raise FieldkitError(f"{path}: gauss_params features_rest has shape {tuple(rest.shape)}, "
                            "expected (N, 3, 3), (N, 8, 3) or (N, 15, 3)")
    if rest.shape[1] == 0:   # SH degree 0: splatfacto keeps the colour's logit
        dc = (torch.sigmoid(dc) - 0.5) / SH_C0
    return {"means": found["means"], "scales": found["scales"], "quats": found["quats"],
            "opacities": found["opacities"].reshape(n), "sh0": dc.reshape(n, 1, 3),
            "shN": rest}


COLMAP_AXES = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
"""nerfstudio's COLMAP dataparser turns the COLMAP world before anything else (its
``assume_colmap_world_coordinate_convention``, on by default): ``p_ns = COLMAP_AXES p``."""


def turns_colmap_world(cfg: dict) -> bool:
    """Whether the run's dataparser read a COLMAP model and turned its world (COLMAP_AXES)."""
    from fieldkit.splats.gsplat_folder import CLASS_KEY

    parser = config_value(cfg, "pipeline", "datamanager", "dataparser")
    if not isinstance(parser, dict):
        return False
    colmap = "colmap_path" in parser or "Colmap" in str(parser.get(CLASS_KEY, ""))
    return colmap and bool(parser.get("assume_colmap_world_coordinate_convention", True))


def config_value(cfg: dict, *keys: str):
    """``cfg[k1][k2]..``, or None where a level is missing."""
    for key in keys:
        if not isinstance(cfg, dict):
            return None
        cfg = cfg.get(key)
    return cfg


def run_dataset(folder: Path, cfg: dict) -> tuple[Path, int] | None:
    """(scene folder, downscale) a splatfacto run was trained on, when its data folder is on
    this machine and fieldkit reads it: as given, or relative to where ``ns-train`` ran (the
    run folder less output_dir/experiment/method/timestamp); else None. The downscale is its
    dataparser's downscale_factor, or nerfstudio's automatic one (the longest side at most
    MAX_SIDE, by powers of two)."""
    from fieldkit.data.scene import read_raw
    from fieldkit.errors import SceneError

    data = config_value(cfg, "pipeline", "datamanager", "dataparser", "data") or \
        config_value(cfg, "pipeline", "datamanager", "data") or cfg.get("data")
    if not isinstance(data, str) or not data:
        return None
    folder = Path(folder).resolve()
    candidates = [Path(data)]
    tail = [cfg.get(k) for k in ("output_dir", "experiment_name", "method_name", "timestamp")]
    if not Path(data).is_absolute() and all(isinstance(t, str) and t for t in tail):
        parts = Path(*tail).parts
        if tuple(folder.parts[-len(parts):]) == parts:
            candidates.insert(0, Path(*folder.parts[:-len(parts)]) / data)
    for c in candidates:
        if not c.is_dir():
            continue
        try:
            raw = read_raw(c)
        except SceneError:
            continue
        factor = config_value(cfg, "pipeline", "datamanager", "dataparser", "downscale_factor")
        if not isinstance(factor, int) or factor < 1:
            longest, factor = int(max(raw.width.max(), raw.height.max())), 1
            while longest / factor > MAX_SIDE:
                factor *= 2
        return c, factor
    return None
