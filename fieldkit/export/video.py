"""Videos and depth visualisation: frames -> mp4/gif, depth -> turbo colours.

Frames are ``[H, W, 3]`` uint8 RGB numpy arrays (float images in [0, 1] are converted with
``to_uint8``). MP4/MOV/MKV go through imageio-ffmpeg's bundled ffmpeg with libx264 (yuv420p,
playable everywhere); GIFs through imageio's Pillow plugin.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from fieldkit.errors import FieldkitError

FFMPEG_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")
GIF_SUFFIXES = (".gif",)
VIDEO_QUALITY = 8
"""imageio-ffmpeg quality, 0 (worst) .. 10 (lossless-ish); 8 is visually clean and small."""

# Polynomial fit of Google's Turbo colormap (Mikhailov 2019; fit by Ruofei Du, Apache-2.0):
# channel(x) = sum_k c_k x^k, k = 0..5.
_TURBO_COEFFS = np.array([
    [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
    [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
    [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
])  # [3, 6]
_TURBO_LUT = None  # [256, 3] uint8, built on first use


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def to_uint8(img) -> np.ndarray:
    """``[H, W, C]`` float tensor/ndarray in [0, 1] -> uint8 ndarray (clipped, rounded; NaN
    becomes 0). uint8 input is returned as an ndarray unchanged."""
    a = _as_numpy(img)
    if a.dtype == np.uint8:
        return a
    a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def turbo(t) -> np.ndarray:
    """Turbo colours for ``t`` in [0, 1] (any shape [...]) -> [..., 3] float in [0, 1]:
    dark blue (0) -> cyan -> green -> yellow -> red -> dark red (1)."""
    x = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)
    powers = x[..., None] ** np.arange(6)  # [..., 6]
    return np.clip(powers @ _TURBO_COEFFS.T, 0.0, 1.0)


def _turbo_lut() -> np.ndarray:
    global _TURBO_LUT
    if _TURBO_LUT is None:
        _TURBO_LUT = (turbo(np.linspace(0.0, 1.0, 256)) * 255.0 + 0.5).astype(np.uint8)
    return _TURBO_LUT


def colorize_depth(depth, alpha=None, near: float | None = None, far: float | None = None
                   ) -> np.ndarray:
    """Depth map ``[H, W]`` (tensor or ndarray) -> ``[H, W, 3]`` uint8 turbo image.

    ``near`` maps to dark blue and ``far`` to dark red (depths outside are clipped); by default
    they are the smallest and largest valid depth. Valid pixels are finite and, when ``alpha``
    ``[H, W]`` (opacity in [0, 1]) is given, have alpha > 0. Colours are multiplied by alpha, so
    empty space is black; NaN/inf depths are black too.
    """
    d = _as_numpy(depth).astype(np.float64)
    if d.ndim == 3 and d.shape[-1] == 1:
        d = d[..., 0]
    if d.ndim != 2:
        raise ValueError(f"colorize_depth expects a [H, W] depth map, got shape {d.shape}")
    valid = np.isfinite(d)
    a = None
    if alpha is not None:
        a = _as_numpy(alpha).astype(np.float64).reshape(d.shape)
        a = np.clip(np.nan_to_num(a, nan=0.0), 0.0, 1.0)
        valid &= a > 0
    vals = d[valid]
    lo = float(near) if near is not None else (float(vals.min()) if vals.size else 0.0)
    hi = float(far) if far is not None else (float(vals.max()) if vals.size else 1.0)
    span = hi - lo
    t = (d - lo) / span if span != 0 else np.zeros_like(d)
    idx = np.round(np.clip(np.nan_to_num(t, nan=0.0), 0.0, 1.0) * 255).astype(np.intp)
    rgb = _turbo_lut()[idx].astype(np.float64)  # [H, W, 3]
    if a is not None:
        rgb *= a[..., None]
    rgb[~valid] = 0.0
    return (rgb + 0.5).astype(np.uint8)


def _rgb_frame(frame) -> np.ndarray:
    """Any frame -> [H, W, 3] uint8 (float in [0, 1] converted; grey expanded; alpha dropped)."""
    f = to_uint8(frame)
    if f.ndim == 2:
        f = f[..., None]
    if f.ndim != 3 or f.shape[-1] not in (1, 3, 4):
        raise ValueError(f"write_video expects [H, W, 3] frames, got shape {f.shape}")
    if f.shape[-1] == 1:
        f = np.repeat(f, 3, axis=-1)
    return np.ascontiguousarray(f[..., :3])


def _pad_even(f: np.ndarray) -> np.ndarray:
    """Pad odd heights/widths by one replicated row/column (yuv420p needs even sizes)."""
    h, w = f.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return f
    return np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_video(path: Path, frames: Iterable, fps: int = 30) -> None:
    """Write ``frames`` (each ``[H, W, 3]`` uint8, or float in [0, 1]; all the same size) to
    ``path``: ``.mp4``/``.m4v``/``.mov``/``.mkv`` as H.264 (odd sizes padded to even by edge
    replication) or ``.gif``. The file appears atomically once complete."""
    import imageio.v2 as iio

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FFMPEG_SUFFIXES + GIF_SUFFIXES:
        raise FieldkitError(f"cannot write video {path}: unknown extension {path.suffix!r}; "
                            f"use one of {', '.join(FFMPEG_SUFFIXES + GIF_SUFFIXES)}")
    if fps <= 0:
        raise FieldkitError(f"cannot write video {path}: fps must be positive, got {fps}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    if suffix in GIF_SUFFIXES:
        writer = iio.get_writer(tmp, mode="I", duration=1000.0 / fps, loop=0)
    else:
        writer = iio.get_writer(tmp, fps=fps, codec="libx264", quality=VIDEO_QUALITY,
                                macro_block_size=1, pixelformat="yuv420p",
                                ffmpeg_log_level="error")
    count, size = 0, None
    try:
        try:
            for frame in frames:
                f = _rgb_frame(frame)
                if size is None:
                    size = f.shape[:2]
                elif f.shape[:2] != size:
                    raise ValueError(f"write_video: frame {count} is {f.shape[1]}x{f.shape[0]},"
                                     f" the first was {size[1]}x{size[0]}")
                writer.append_data(f if suffix in GIF_SUFFIXES else _pad_even(f))
                count += 1
        except BaseException:
            try:  # imageio does not close on errors by itself, and ffmpeg would linger
                writer.close()
            except Exception:
                pass
            raise
        writer.close()
        if count == 0:
            raise ValueError(f"write_video: no frames to write to {path}")
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise FieldkitError(f"ffmpeg could not write {path}; check the frame size and "
                                "that the folder is writable")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
