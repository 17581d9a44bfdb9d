"""nerfstudio's dataparser frame: where splatfacto's exported Gaussians live.

nerfstudio trains in a frame of its own. Its dataparser centres, orients and scales the
dataset's world: ``p_frame = scale * (transform @ [p_world, 1])``, with ``transform`` [3, 4]
(a rotation and a translation). It writes both to the run's ``dataparser_transforms.json``
(``{"transform": [[...] x 3], "scale": s}``). ``ns-export gaussian-splat`` writes splatfacto's
Gaussians in that frame, not in the dataset's world units. ``to_dataset_world`` brings them back,
so that a splatfacto .ply can be distilled with ``--scene`` (the dataset's cameras and photos).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fieldkit.data.normalize import Normalisation
from fieldkit.errors import FieldkitError


def read_dataparser_transform(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """(rotation [3, 3], translation [3], scale) of a nerfstudio dataparser_transforms.json;
    a malformed file is a one-line FieldkitError."""
    path = Path(path)

    def fail(problem: str) -> FieldkitError:
        return FieldkitError(f"{path}: {problem}; pass the dataparser_transforms.json of the "
                             "nerfstudio run that made the .ply")

    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FieldkitError(f"{path} does not exist; pass the dataparser_transforms.json of the "
                            "nerfstudio run that made the .ply") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise fail(f"not readable as JSON ({e})") from None
    if not isinstance(data, dict) or "transform" not in data or "scale" not in data:
        raise fail("expected an object with 'transform' and 'scale'")
    try:
        m = np.asarray(data["transform"], dtype=np.float64)
        scale = float(data["scale"])
    except (TypeError, ValueError):
        raise fail("'transform' or 'scale' is not numeric") from None
    if m.shape == (4, 4):
        m = m[:3]
    if m.shape != (3, 4) or not np.isfinite(m).all():
        raise fail(f"'transform' must be 3x4 finite numbers (got shape {m.shape})")
    R, t = m[:, :3], m[:, 3]
    if np.abs(R @ R.T - np.eye(3)).max() > 1e-4 or np.linalg.det(R) < 0:
        raise fail("'transform' does not start with a rotation")
    if not (np.isfinite(scale) and scale > 0):
        raise fail(f"'scale' is {scale}, expected a positive number")
    return R, t, scale


def to_dataset_world(params: dict[str, torch.Tensor],
                     frame: Normalisation) -> dict[str, torch.Tensor]:
    """Splat params in nerfstudio's dataparser frame -> the dataset's world units, by the
    inverse of ``frame`` (``nerfstudio_frame``): ``p_world = R^T p_frame / scale + c``."""
    from fieldkit.splats.transform import transform_splats

    return transform_splats(params, torch.from_numpy(frame.rotation.T.copy()), 1.0 / frame.scale,
                            torch.from_numpy(np.asarray(frame.center, dtype=np.float64)))


def nerfstudio_frame(path: Path, turned: bool = False) -> Normalisation:
    """The similarity from the dataset's world to the dataparser frame of ``path`` (a
    dataparser_transforms.json), as a ``Normalisation`` whose box is that frame:
    ``p_frame = scale * (R p_world + t) = scale * R (p_world - c)`` with ``c = -R^T t``.
    ``turned``: the world is COLMAP's, which nerfstudio turned first (``p_ns = A p``,
    ``nerfstudio_run.COLMAP_AXES``): the rotation is ``R A`` and the centre ``A^T c``."""
    from fieldkit.splats.nerfstudio_run import COLMAP_AXES

    R, t, scale = read_dataparser_transform(path)
    center = -R.T @ t
    if turned:
        R, center = R @ COLMAP_AXES, COLMAP_AXES.T @ center
    return Normalisation(scale, R, center)
