"""Scene: images (uint8, CPU), cameras in the renderer's box, splits and normalisation.

``load_scene(path)`` detects the format (Blender, instant-ngp/nerfstudio, COLMAP), checks the
input, normalises the region of interest into [-1, 1]^3 and loads the images, optionally
downscaled through a cache. Pixels of all images live in one flat [sum(H*W), C] buffer so that
ray batches can be drawn across every training image at once, whatever their sizes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fieldkit.data.cameras import Cameras
from fieldkit.data.formats import blender, colmap, ngp
from fieldkit.data.formats.common import RawScene
from fieldkit.data.images import downscaled_size, image_size, load_images
from fieldkit.data.normalize import Normalisation, auto_normalisation
from fieldkit.errors import SceneError

FORMATS = {"blender": blender, "ngp": ngp, "colmap": colmap}
"""Detected in this order."""


@dataclass
class Scene:
    """A loaded scene. Cameras and points are in box coordinates (see ``normalisation``)."""

    root: Path
    """The scene folder."""
    format: str
    """blender, ngp or colmap."""
    cameras: Cameras
    """N cameras, OpenCV axes, box coordinates, intrinsics at the loaded (downscaled) size."""
    image_paths: list[Path]
    """N source image files."""
    pixels: Tensor
    """[sum(H*W), C] uint8 pixels of all images, C = 3 (RGB) or 4 (RGBA), on the CPU."""
    offsets: Tensor
    """[N + 1] int64 start of each image in ``pixels``."""
    splits: dict[str, Tensor]
    """Split name -> [n] int64 image indices."""
    normalisation: Normalisation
    """World -> box transform; ``normalisation.bound`` is the scene bound in box units."""
    camera_models: list[str]
    """N camera model names from the source."""
    points: Tensor | None = None
    """[P, 3] float32 sparse points in box coordinates (COLMAP), or None."""
    point_rgb: Tensor | None = None
    """[P, 3] uint8 colours of ``points``."""
    downscale: int = 1
    """Factor the images were reduced by."""

    def __len__(self) -> int:
        return len(self.cameras)

    @property
    def has_alpha(self) -> bool:
        return self.pixels.shape[1] == 4

    def image(self, i: int) -> Tensor:
        """[H, W, C] uint8 image ``i`` (a view into ``pixels``)."""
        h, w = int(self.cameras.height[i]), int(self.cameras.width[i])
        return self.pixels[self.offsets[i]:self.offsets[i + 1]].view(h, w, -1)

    def split(self, name: str) -> Tensor:
        """Indices of a split; ``val`` falls back to ``test`` when the dataset has no val."""
        if name in self.splits:
            return self.splits[name]
        if name == "val" and "test" in self.splits:
            return self.splits["test"]
        raise SceneError(f"{self.root} has no {name!r} split (has: {', '.join(self.splits)})")

    def lookup(self, image_idx: Tensor, xy: Tensor) -> Tensor:
        """Pixels at integer positions. ``image_idx``: [R] int64; ``xy``: [R, 2] int64 (column,
        row). Returns [R, C] uint8."""
        flat = self.offsets[image_idx] + xy[:, 1] * self.cameras.width[image_idx] + xy[:, 0]
        return self.pixels[flat]


def composite(rgba: Tensor, background: Tensor) -> Tensor:
    """Straight-alpha RGBA uint8 [..., 4] (or RGB [..., 3]) over ``background`` [..., 3] floats
    in [0, 1] (broadcastable). Returns float32 RGB [..., 3] in [0, 1]."""
    rgb = rgba[..., :3].float() / 255.0
    if rgba.shape[-1] == 3:
        return rgb
    alpha = rgba[..., 3:4].float() / 255.0
    return rgb * alpha + background.to(rgb) * (1.0 - alpha)


def detect_format(root: Path) -> str:
    """Name of the scene format of folder ``root``."""
    if not root.exists():
        raise SceneError(f"{root} does not exist; pass the folder that holds the scene")
    if not root.is_dir():
        raise SceneError(f"{root} is not a folder; pass the folder that holds the scene")
    for name, module in FORMATS.items():
        if module.detect(root):
            return name
    raise SceneError(f"{root} is not a scene folder: expected transforms_train.json (Blender), "
                     "transforms.json (instant-ngp/nerfstudio) or sparse/0/ + images/ (COLMAP)")


def read_raw(root: Path) -> RawScene:
    """Detect and parse a scene folder without loading the pixels."""
    return FORMATS[detect_format(root)].load(root)


def check_image_sizes(raw: RawScene) -> None:
    """Every image must have the size its intrinsics were calibrated for."""
    for i, path in enumerate(raw.image_paths):
        w, h = image_size(path)
        if (w, h) != (raw.width[i], raw.height[i]):
            raise SceneError(f"{path} is {w}x{h} but its intrinsics are for "
                             f"{raw.width[i]}x{raw.height[i]}; use the original images "
                             "(fieldkit resizes them itself with --downscale)")


def normalise(raw: RawScene) -> Normalisation:
    if raw.normalisation is not None:
        return raw.normalisation
    return auto_normalisation(raw.c2w, raw.points, orient=True, bound=raw.bound)


def scene_cameras(raw: RawScene, norm: Normalisation, downscale: int = 1) -> Cameras:
    """float32 cameras of ``raw`` in box coordinates, with intrinsics at the downscaled size."""
    f64 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))  # noqa: E731
    cams = Cameras(f64(raw.c2w), f64(raw.K), torch.from_numpy(raw.width),
                   torch.from_numpy(raw.height), f64(raw.distortion))
    cams = cams.to_box(norm)
    if downscale > 1:
        new = [downscaled_size(int(w), int(h), downscale) for w, h in zip(raw.width, raw.height)]
        cams = cams.resized(torch.tensor([s[0] for s in new]), torch.tensor([s[1] for s in new]))
    return Cameras(cams.c2w.float(), cams.K.float(), cams.width, cams.height,
                   None if cams.distortion is None else cams.distortion.float())


def _check_downscale(downscale: int) -> None:
    if isinstance(downscale, bool) or not isinstance(downscale, int) or downscale < 1:
        raise SceneError(f"--downscale must be a positive integer, got {downscale!r}")


def load_cameras(path: str | Path, downscale: int = 1) -> tuple[Cameras, dict[str, Tensor],
                                                                Normalisation]:
    """Cameras, splits and normalisation of a scene without decoding its images."""
    _check_downscale(downscale)
    raw = read_raw(Path(path))
    norm = normalise(raw)
    splits = {k: torch.from_numpy(v) for k, v in raw.splits.items()}
    return scene_cameras(raw, norm, downscale), splits, norm


def load_scene(path: str | Path, downscale: int = 1) -> Scene:
    """Load a scene folder of any supported format (see module docstring)."""
    _check_downscale(downscale)
    root = Path(path)
    raw = read_raw(root)
    check_image_sizes(raw)
    norm = normalise(raw)

    arrays = load_images(raw.image_paths, root, downscale)
    channels = {a.shape[2] for a in arrays}
    if channels == {3, 4}:  # mixed: give RGB images an opaque alpha
        arrays = [a if a.shape[2] == 4 else np.concatenate(
            [a, np.full(a.shape[:2] + (1,), 255, np.uint8)], axis=2) for a in arrays]
    for a, p, w, h in zip(arrays, raw.image_paths, raw.width, raw.height):
        expect = downscaled_size(int(w), int(h), downscale)
        if (a.shape[1], a.shape[0]) != expect:  # a stale or foreign cache file
            raise SceneError(f"the cached copy of {p} is {a.shape[1]}x{a.shape[0]}, expected "
                             f"{expect[0]}x{expect[1]}; delete the .fieldkit cache folder")
    sizes = np.array([a.shape[0] * a.shape[1] for a in arrays])
    offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
    pixels = torch.from_numpy(np.concatenate([a.reshape(-1, a.shape[2]) for a in arrays]))

    cams = scene_cameras(raw, norm, downscale)
    points = rgb = None
    if raw.points is not None:
        points = norm.to_box(torch.from_numpy(raw.points)).float()
        rgb = torch.from_numpy(raw.point_rgb)
    return Scene(root=root, format=raw.format, cameras=cams, image_paths=raw.image_paths,
                 pixels=pixels, offsets=offsets,
                 splits={k: torch.from_numpy(v) for k, v in raw.splits.items()},
                 normalisation=norm, camera_models=raw.camera_models, points=points,
                 point_rgb=rgb, downscale=downscale)
