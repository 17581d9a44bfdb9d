"""One viewer frame: which source draws which pixels, rendered strip by strip.

A frame of W x H pixels is cut into pieces: the whole frame (one model), two halves each
showing the centre of the view (side by side), or the columns left and right of a split line
(split: each model renders only its own columns, so a comparison costs one render). Pieces are
cut into horizontal strips, each a camera of its own (``sub_camera``), so rendering can stop
between strips: between training steps, or when the camera moves again.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from fieldkit.data.cameras import Cameras
from fieldkit.export.video import colorize_depth, to_uint8
from fieldkit.viewer.camera import recentered, sub_camera
from fieldkit.render.crop import CropBox

OUTPUTS = ("rgb", "depth", "opacity")
LAYOUTS = ("side-by-side", "split")


@dataclass(frozen=True)
class FrameSettings:
    """What a client wants drawn, besides the camera."""

    output: str = "rgb"
    """rgb, depth (turbo colour map) or opacity (grey)."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Colour behind empty space, [3] in [0, 1]."""
    crop: CropBox | None = None
    """Show only what lies inside this box (None: everything)."""
    layout: str = "split"
    """With two sources: side-by-side or split."""
    split: float = 0.5
    """Split line position, as a fraction of the width from the left."""
    step_scale: float = 1.0
    """Volumetric models march with steps this many times longer (previews)."""


FAR_DEPTH = 100.0
"""View depth (box units) sent where the frame is (nearly) empty: the 3D scene's objects show
there (viser encodes depths up to ~167)."""


def layout(camera: Cameras, n_sources: int, settings: FrameSettings) -> list[tuple[int, Cameras,
                                                                                    int]]:
    """[(source index, camera, x offset)] covering the frame of ``camera`` (W x H)."""
    w = int(camera.width[0])
    h = int(camera.height[0])
    if n_sources < 2:
        return [(0, camera, 0)]
    if settings.layout == "side-by-side":
        half = w // 2
        return [(0, recentered(camera, half), 0), (1, recentered(camera, w - half), half)]
    s = int(round(min(max(settings.split, 0.0), 1.0) * w))
    parts = []
    if s > 0:
        parts.append((0, sub_camera(camera, 0, 0, s, h), 0))
    if s < w:
        parts.append((1, sub_camera(camera, s, 0, w - s, h), s))
    return parts


class FrameJob:
    """A frame being rendered strip by strip into float buffers rgb [H, W, 3], depth and alpha
    [H, W, 1].

    Strips are cut as they are rendered, ``strip_pixels`` at a time (the renderer may change it
    between strips: a model's cost per pixel varies a hundredfold over a training run, so the
    strip follows the measured speed and stays near its time target)."""

    def __init__(self, sources, camera: Cameras, settings: FrameSettings, key,
                 strip_pixels: int | None = None):
        """``sources``: list of ``Source``; ``key``: identifies what this frame shows;
        ``strip_pixels``: about how many pixels per strip (None: whole pieces)."""
        self.sources, self.settings, self.key = sources, settings, key
        self.camera = camera
        self.strip_pixels = strip_pixels
        self.width, self.height = int(camera.width[0]), int(camera.height[0])
        self.rgb = np.zeros((self.height, self.width, 3), np.float32)
        self.depth = np.zeros((self.height, self.width, 1), np.float32)
        self.alpha = np.zeros((self.height, self.width, 1), np.float32)
        self.done_mask = np.zeros((self.height, self.width), bool)
        self.parts = layout(camera, len(sources), settings)
        """[(source index, camera, x offset)]: the columns each source draws."""
        self._part, self._row = 0, 0
        self.last_pixels = 0
        """Pixels of the strip rendered last."""
        self.seconds = 0.0
        """Time spent rendering so far."""
        self.borders = [x0 for _, _, x0 in self.parts][1:]

    @property
    def done(self) -> bool:
        return self._part >= len(self.parts)

    @property
    def fraction(self) -> float:
        rows = self._part * self.height + (0 if self.done else self._row)
        return rows / max(len(self.parts) * self.height, 1)

    def _rows(self, width: int) -> int:
        if self.strip_pixels is None:
            return self.height
        return max(4, min(self.height, self.strip_pixels // max(width, 1)))

    @property
    def total(self) -> int:
        """Strips in all at the current strip size."""
        return sum(-(-self.height // self._rows(int(cam.width[0]))) for _, cam, _ in self.parts)

    def run_piece(self) -> float:
        """Render the next strip; returns the seconds it took."""
        src, cam, x0 = self.parts[self._part]
        w = int(cam.width[0])
        y0 = self._row
        hh = min(self._rows(w), self.height - y0)
        t0 = time.perf_counter()
        bg = torch.tensor(self.settings.background, dtype=torch.float32)
        out = self.sources[src].render(sub_camera(cam, 0, y0, w, hh), bg, self.settings.crop,
                                       self.settings.step_scale)
        h, w = out["rgb"].shape[:2]
        ys, xs = slice(y0, y0 + h), slice(x0, x0 + w)
        self.rgb[ys, xs] = out["rgb"].numpy()
        self.depth[ys, xs] = out["depth"].numpy()
        self.alpha[ys, xs] = out["alpha"].numpy()
        self.done_mask[ys, xs] = True
        self.last_pixels = h * w
        self._row += hh
        if self._row >= self.height:
            self._part, self._row = self._part + 1, 0
        dt = time.perf_counter() - t0
        self.seconds += dt
        return dt

    def image(self) -> np.ndarray:
        """[H, W, 3] uint8 of what has been rendered (the requested output), with a thin line
        between compared models."""
        return to_image(self.rgb, self.depth, self.alpha, self.settings.output, self.borders)

    def view_depth(self, base: np.ndarray | None = None) -> np.ndarray:
        """[H, W, 1] float32 depth along the view axis (box units) of what was rendered, for
        the browser to hide the 3D scene's objects (frustums, crop box) behind the models
        (viser's depth compositing): FAR_DEPTH where the frame is (nearly) empty; where no strip
        is done yet, ``base`` (the previous frame's, when the same size) or FAR_DEPTH."""
        z = self.depth[..., 0] / self.camera.ray_length_per_depth(0).numpy()
        solid = (self.alpha[..., 0] > 0.5) & np.isfinite(z)
        depth = np.where(solid, z, FAR_DEPTH).astype(np.float32)[..., None]
        if not self.done_mask.all():
            rest = base if base is not None and base.shape == depth.shape else FAR_DEPTH
            depth = np.where(self.done_mask[..., None], depth, rest).astype(np.float32)
        return depth

    def partial_image(self, base: np.ndarray | None) -> np.ndarray:
        """[H, W, 3] uint8: the strips done so far over ``base`` (the previous frame, any
        size, resized to this one)."""
        img = self.image()
        if base is None:
            return img
        if base.shape[:2] != img.shape[:2]:
            from PIL import Image

            base = np.asarray(Image.fromarray(base).resize((self.width, self.height),
                                                           Image.BILINEAR))
        return np.where(self.done_mask[..., None], img, base)


def to_image(rgb: np.ndarray, depth: np.ndarray, alpha: np.ndarray, output: str,
             borders: list[int] = ()) -> np.ndarray:
    """Float buffers rgb [H, W, 3], depth / alpha [H, W, 1] -> [H, W, 3] uint8 of ``output``."""
    if output == "depth":
        img = colorize_depth(depth[..., 0], alpha[..., 0])
    elif output == "opacity":
        img = np.repeat(to_uint8(alpha), 3, axis=-1)
    else:
        img = to_uint8(rgb)
    img = np.ascontiguousarray(img)
    for x in borders:
        if 0 < x < img.shape[1]:
            img[:, max(0, x - 1):x + 1] = (255, 64, 0)
    return img
