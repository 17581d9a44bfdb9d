"""Gaussian splats as .splat files (the web viewers' 32-byte layout, antimatter15's).

Each Gaussian is 32 little-endian bytes, with no header::

    float32 x, y, z;  float32 sigma_x, sigma_y, sigma_z  (standard deviations, not logs)
    uint8 r, g, b, a  (base colour SH_C0 * f_dc + 0.5, and sigmoid(opacity), times 255)
    uint8 q_w, q_x, q_y, q_z  (the unit quaternion times 128, plus 128)

Only the base colour is kept (SH degree 0), in the .ply's world. gsplat's exporter writes the
files (``gsplat.exporter.splat2splat_bytes``); fieldkit reads them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from fieldkit.encoders.sh import C0 as SH_C0
from fieldkit.errors import FieldkitError
from fieldkit.train.checkpoint import atomic_write_bytes

RECORD = np.dtype([("means", "<f4", 3), ("sigmas", "<f4", 3), ("rgba", "u1", 4),
                   ("quat", "u1", 4)])


def byte_opacity_logits(alpha: np.ndarray) -> np.ndarray:
    """Logits of opacities stored as bytes (``alpha`` = byte / 255), held half a step inside
    (0, 1) so that bytes 0 and 255 give finite logits."""
    alpha = np.clip(alpha.astype(np.float32), 0.5 / 255.0, 254.5 / 255.0)
    return np.log(alpha / (1.0 - alpha))


def gsplat_exporter():
    """gsplat's exporter module (the writer of .splat and compressed .ply files), or a one-line
    error that says how to install it."""
    try:
        import gsplat.exporter
    except ImportError:
        raise FieldkitError("writing .splat and .compressed.ply files uses gsplat's exporter; "
                            "install it with: pip install 'fieldkit[export]' (or gsplat)") from None
    return gsplat.exporter


def write_splat_file(path: str | Path, params: dict[str, Tensor]) -> Path:
    """Write splat params as a .splat file (base colours only) through gsplat's exporter."""
    splat2splat_bytes = gsplat_exporter().splat2splat_bytes
    p = {k: v.detach().to("cpu", torch.float32) for k, v in params.items()}
    data = splat2splat_bytes(p["means"], p["scales"], p["quats"], p["opacities"],
                             p["sh0"].reshape(-1, 3))
    path = Path(path)
    atomic_write_bytes(path, data)
    return path


def splat_file_bytes(path: Path) -> tuple[bytes, Callable[[str], FieldkitError]]:
    """(the bytes of ``path``, ``fail``): ``fail(problem)`` makes the one-line error "cannot
    read splat file PATH: problem" the binary readers raise; an unreadable file raises it
    now."""
    def fail(problem: str) -> FieldkitError:
        return FieldkitError(f"cannot read splat file {path}: {problem}")

    try:
        return Path(path).read_bytes(), fail
    except OSError as e:
        raise fail(f"{e.strerror or e}; check the path") from None


def read_splat_file(path: str | Path) -> dict[str, Tensor]:
    """Read a .splat file into float32 splat params of SH degree 0."""
    path = Path(path)
    raw, fail = splat_file_bytes(path)
    if not raw or len(raw) % RECORD.itemsize:
        raise fail(f"{len(raw)} bytes is not a whole number of {RECORD.itemsize}-byte "
                   "Gaussians; the file is truncated or not a .splat file")
    rec = np.frombuffer(raw, RECORD)
    n = len(rec)
    sigmas = rec["sigmas"].astype(np.float32)
    if not (np.isfinite(rec["means"]).all() and np.isfinite(sigmas).all()) or (sigmas < 0).any():
        raise fail("it holds non-finite centres or negative sizes; it is not a .splat file")
    quat = rec["quat"].astype(np.float32) - 128.0
    norm = np.linalg.norm(quat, axis=1, keepdims=True)
    quat = np.where(norm > 0, quat / np.maximum(norm, 1e-12), np.array([1, 0, 0, 0], np.float32))
    rgba = rec["rgba"].astype(np.float32) / 255.0
    out = {
        "means": rec["means"].astype(np.float32),
        "scales": np.log(np.maximum(sigmas, 1e-12)),
        "quats": quat,
        "opacities": byte_opacity_logits(rgba[:, 3]),
        "sh0": ((rgba[:, :3] - 0.5) / SH_C0).reshape(n, 1, 3),
        "shN": np.zeros((n, 0, 3), np.float32),
    }
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in out.items()}
