"""Gaussian splats as SOG files (PlayCanvas's "spatially ordered Gaussians", SuperSplat's web
export): lossless WebP images of quantised attributes and a meta.json, either zipped in one
``.sog`` file or side by side in a folder.

Version 2 (``meta.json``: ``version``, ``count``, ``means``, ``scales``, ``quats``, ``sh0``,
optional ``shN``); Gaussian i is pixel i of every image, row by row:

- ``means``: ``means_l`` and ``means_u`` hold the low and high bytes of 16-bit x, y, z between
  ``mins`` and ``maxs`` of ``sign(v) * log(|v| + 1)`` (undone after the lerp);
- ``scales``: r, g, b index a 256-entry ``codebook`` of log scales;
- ``quats``: r, g, b are the three smaller components of the unit quaternion (w, x, y, z) as
  ``(c * sqrt(2) + 1) / 2 * 255``; alpha is 252 + the index of the largest, which is positive;
- ``sh0``: r, g, b index the ``codebook`` of SH DC coefficients; alpha is sigmoid(opacity) * 255;
- ``shN``: ``labels`` holds a 16-bit palette entry (r low, g high); palette entry k's
  coefficient j is pixel ((k mod 64) * K + j, k div 64) of ``centroids``, whose r, g, b index
  the ``codebook``.

Read only: fieldkit writes .spz and the other web formats (``fieldkit/export/splats.py``).
"""
from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fieldkit.errors import FieldkitError
from fieldkit.splats.splat_file import byte_opacity_logits

META = "meta.json"


def is_sog_folder(folder: Path) -> bool:
    """Whether ``folder`` holds an unbundled SOG (its meta.json beside means_l.webp)."""
    return (folder / META).is_file() and (folder / "means_l.webp").is_file()


def read_sog(path: str | Path) -> dict[str, Tensor]:
    """Read a .sog bundle, or the meta.json of an unbundled one, into float32 splat params."""
    path = Path(path)

    def fail(problem: str) -> FieldkitError:
        return FieldkitError(f"cannot read SOG file {path}: {problem}")

    try:
        if path.name == META:
            def load(name: str) -> bytes:
                return (path.parent / name).read_bytes()
        else:
            bundle = zipfile.ZipFile(path)

            def load(name: str) -> bytes:
                return bundle.read(name)
        meta = json.loads(load(META))
    except (OSError, KeyError) as e:
        raise fail(f"{getattr(e, 'strerror', None) or e}; a SOG is a zip (or a folder) holding "
                   "meta.json and its .webp images") from None
    except zipfile.BadZipFile:
        raise fail("not a zip file; a .sog bundles meta.json and .webp images in a zip") from None
    except ValueError:
        raise fail("meta.json is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("version") != 2:
        version = meta.get("version") if isinstance(meta, dict) else None
        raise fail(f"SOG version {version!r} is not supported (fieldkit reads version 2); "
                   "re-save it with a current SuperSplat or splat-transform")
    try:
        n = int(meta["count"])

        def image(name: str) -> tuple[np.ndarray, int]:
            from PIL import Image

            try:
                rgba = np.asarray(Image.open(io.BytesIO(load(name))).convert("RGBA"))
            except (OSError, KeyError) as e:
                raise fail(f"image {name}: {e}") from None
            return rgba.reshape(-1, 4), rgba.shape[1]

        def pixels(name: str) -> np.ndarray:
            px, _ = image(name)
            if len(px) < n:
                raise fail(f"image {name} has {len(px)} pixels for {n} Gaussians")
            return px[:n].astype(np.int64)

        means = _means(pixels(meta["means"]["files"][0]), pixels(meta["means"]["files"][1]),
                       meta["means"]["mins"], meta["means"]["maxs"])
        scales = np.asarray(meta["scales"]["codebook"], np.float32)[
            pixels(meta["scales"]["files"][0])[:, :3]]
        quats = _quats(pixels(meta["quats"]["files"][0]))
        sh0_px = pixels(meta["sh0"]["files"][0])
        sh0 = np.asarray(meta["sh0"]["codebook"], np.float32)[sh0_px[:, :3]]
        rest = np.zeros((n, 0, 3), np.float32)
        if meta.get("shN"):
            k = (int(meta["shN"]["bands"]) + 1) ** 2 - 1
            centroids, width = image(meta["shN"]["files"][0])
            labels = pixels(meta["shN"]["files"][1])
            label = labels[:, 0] | (labels[:, 1] << 8)
            cols = (label % 64)[:, None] * k + np.arange(k)[None]
            idx = (label // 64)[:, None] * width + cols
            if idx.max(initial=0) >= len(centroids) or label.max(initial=0) >= meta["shN"]["count"]:
                raise fail("an SH palette entry lies outside its centroids image")
            rest = np.asarray(meta["shN"]["codebook"], np.float32)[centroids[idx][..., :3]]
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise fail(f"meta.json lacks or mis-sizes an entry ({e!r}); the file is corrupt") \
            from None
    out = {"means": means, "scales": scales, "quats": quats,
           "opacities": byte_opacity_logits(sh0_px[:, 3] / 255.0), "sh0": sh0.reshape(n, 1, 3),
           "shN": rest}
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in out.items()}


def _means(lo: np.ndarray, hi: np.ndarray, mins, maxs) -> np.ndarray:
    """[N, 3] centres from the two byte images and the log-space bounds."""
    q = (lo[:, :3] | (hi[:, :3] << 8)).astype(np.float64) / 65535.0
    low, high = np.asarray(mins, np.float64), np.asarray(maxs, np.float64)
    span = np.where(high - low == 0, 1.0, high - low)
    v = low + span * q
    return (np.sign(v) * np.expm1(np.abs(v))).astype(np.float32)


def _quats(px: np.ndarray) -> np.ndarray:
    """[N, 4] unit quaternions (w, x, y, z) from smallest-three pixels; identity where the
    alpha tag is not 252-255."""
    n = len(px)
    tag = px[:, 3]
    largest = np.clip(tag - 252, 0, 3)
    others = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[largest]
    q = np.zeros((n, 4), np.float64)
    rows = np.arange(n)
    for j in range(3):
        q[rows, others[:, j]] = (px[:, j] / 255.0 * 2.0 - 1.0) / math.sqrt(2.0)
    q[rows, largest] = np.sqrt(np.clip(1.0 - (q ** 2).sum(axis=1), 0.0, None))
    q[tag < 252] = (1.0, 0.0, 0.0, 0.0)
    return q.astype(np.float32)
