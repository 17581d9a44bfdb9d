"""``fieldkit scene info``: what a scene folder holds, without decoding its pixels."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np

from fieldkit.data.formats.common import RawScene
from fieldkit.data.scene import check_image_sizes, normalise, read_raw

FORMAT_NAMES = {
    "blender": "Blender / NeRF-synthetic (transforms_{train,val,test}.json)",
    "ngp": "instant-ngp / nerfstudio (transforms.json)",
    "colmap": "COLMAP (sparse model + images/)",
}


def _distortion_terms(raw: RawScene) -> list[str]:
    names = ("k1", "k2", "k3", "k4", "p1", "p2")
    used = np.abs(raw.distortion).max(0) > 0 if len(raw.distortion) else np.zeros(6, bool)
    return [n for n, u in zip(names, used) if u]


def scene_summary(path: str | Path) -> dict:
    """Facts about a scene as plain JSON-able values (format, splits, sizes, cameras, points)."""
    root = Path(path)
    raw = read_raw(root)
    check_image_sizes(raw)
    norm = normalise(raw)
    sizes = Counter(f"{w}x{h}" for w, h in zip(raw.width.tolist(), raw.height.tolist()))
    fov_x = [2 * math.degrees(math.atan(0.5 * w / K[0, 0])) for K, w in zip(raw.K, raw.width)]
    angle = math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(norm.rotation) - 1) / 2))))
    return {
        "path": str(root),
        "format": raw.format,
        "format_name": FORMAT_NAMES[raw.format],
        "num_images": len(raw.image_paths),
        "splits": {k: int(len(v)) for k, v in raw.splits.items()},
        "resolutions": dict(sizes),
        "camera_models": dict(Counter(raw.camera_models)),
        "distortion_terms": _distortion_terms(raw),
        "fov_x_degrees": [round(min(fov_x), 2), round(max(fov_x), 2)],
        "normalisation": {**norm.as_dict(), "rotation_degrees": round(angle, 3)},
        "num_points": 0 if raw.points is None else int(len(raw.points)),
        **{k: v for k, v in raw.extras.items() if v is not None},
    }


def format_summary(info: dict) -> str:
    """Human-readable lines for ``scene info``."""
    splits = ", ".join(f"{k} {v}" for k, v in info["splits"].items())
    res = ", ".join(f"{k} ({v})" for k, v in info["resolutions"].items())
    models = ", ".join(f"{k} ({v})" for k, v in info["camera_models"].items())
    dist = " ".join(info["distortion_terms"]) or "none"
    n = info["normalisation"]
    centre = ", ".join(f"{c:.4g}" for c in n["center"])
    lines = [
        f"scene          {info['path']}",
        f"format         {info['format_name']}",
        f"images         {info['num_images']} ({splits})",
        f"resolution     {res}",
        f"camera models  {models}; distortion: {dist}",
        f"field of view  {info['fov_x_degrees'][0]}-{info['fov_x_degrees'][1]} deg horizontal",
        f"normalisation  box = {n['scale']:.4g} x R(p - [{centre}]), R turns "
        f"{n['rotation_degrees']:.2f} deg; region of interest [-1, 1]^3, scene bound "
        f"{n['bound']:g}",
        f"points         {info['num_points']} sparse points",
    ]
    if info.get("frames_missing"):
        lines.append(f"skipped        {info['frames_missing']} of {info['frames_listed']} "
                     "frames without an image")
    return "\n".join(lines)
