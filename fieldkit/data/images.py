"""Reading images as uint8 arrays, with a cache of downscaled copies.

``--downscale N`` resizes each image with a box filter to round(W/N) x round(H/N) once and keeps
the result as PNG in ``SCENE/.fieldkit/downscale_N/`` (or, for a read-only scene, under
``$FIELDKIT_CACHE`` / ``$XDG_CACHE_HOME/fieldkit`` / ``~/.cache/fieldkit``). A cached copy is
reused while it is newer than its source. Cache files are written atomically.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fieldkit.errors import SceneError
from fieldkit.progress import progress_iter

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG", ".exr", ".webp")


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) read from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise SceneError(f"{path} does not exist; restore the image or remove its frame") from None
    except UnidentifiedImageError:
        raise SceneError(f"{path} is not a readable image (unknown or corrupt format); "
                         "replace the file") from None
    except OSError as e:
        raise SceneError(f"{path} is not a readable image ({e}); replace the file") from None


def _decode(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
            elif im.mode != "RGB":
                im = im.convert("RGB")
            return np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise SceneError(f"{path} does not exist; restore the image or remove its frame") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise SceneError(f"{path} could not be decoded ({e}); replace the file") from None


def downscaled_size(width: int, height: int, factor: int) -> tuple[int, int]:
    """Size of an image after ``--downscale factor``."""
    return max(1, round(width / factor)), max(1, round(height / factor))


def cache_dir_for(scene_root: Path, factor: int) -> Path:
    """Where downscaled copies of ``scene_root``'s images live (next to the scene if writable)."""
    local = scene_root / ".fieldkit" / f"downscale_{factor}"
    probe = local if local.exists() else scene_root
    if os.access(probe, os.W_OK):
        return local
    base = os.environ.get("FIELDKIT_CACHE")
    if base is None:
        xdg = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
        base = str(Path(xdg) / "fieldkit")
    digest = hashlib.sha1(str(scene_root.resolve()).encode()).hexdigest()[:10]
    return Path(base) / f"{scene_root.resolve().name}-{digest}" / f"downscale_{factor}"


def _atomic_save_png(array: np.ndarray, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".tmp.png")
    os.close(fd)
    try:
        Image.fromarray(array).save(tmp, format="PNG", compress_level=1)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load_one(path: Path, factor: int, scene_root: Path, cache: Path | None) -> np.ndarray:
    if factor == 1:
        return _decode(path)
    try:
        rel = path.resolve().relative_to(scene_root.resolve())
    except ValueError:  # image outside the scene folder
        rel = Path(hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]) / path.name
    cached = (cache or cache_dir_for(scene_root, factor)) / rel.with_suffix(".png")
    if cached.exists() and cached.stat().st_mtime >= path.stat().st_mtime:
        return _decode(cached)
    full = _decode(path)
    h, w = full.shape[:2]
    size = downscaled_size(w, h, factor)
    small = np.asarray(Image.fromarray(full).resize(size, Image.Resampling.BOX), dtype=np.uint8)
    try:
        _atomic_save_png(small, cached)
    except OSError:
        pass  # caching is an optimisation; a full disk must not stop loading
    return small


def load_images(
    paths: list[Path], scene_root: Path, factor: int = 1, desc: str = "loading images",
) -> list[np.ndarray]:
    """Decode ``paths`` (optionally downscaled and cached) in parallel, with a progress bar.

    Returns one [H, W, 3|4] uint8 array per path, in order.
    """
    if factor < 1:
        raise SceneError(f"--downscale must be a positive integer, got {factor}")
    cache = cache_dir_for(scene_root, factor) if factor > 1 else None
    workers = min(8, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(workers) as pool:
        jobs = pool.map(lambda p: _load_one(p, factor, scene_root, cache), paths)
        return list(progress_iter(jobs, total=len(paths), desc=desc))
