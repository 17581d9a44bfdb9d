"""What the viewer puts in the 3D scene: training-camera frustums with thumbnails, splats drawn
by the browser, the crop box outline, a solid background."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from fieldkit.viewer.camera import cameras_to_view
from fieldkit.render.crop import CropBox


def thumbnails(source, indices: list[int], size: int) -> dict[int, np.ndarray]:
    """Training image ``i`` (index into ``source.cameras``) -> [h, w, 3] uint8, long side
    ``size``. Empty when the scene's images cannot be read."""
    from PIL import Image

    from fieldkit.data.scene import composite

    scene = getattr(source.trainer, "scene", None)
    if scene is not None and Path(scene.root) != source.scene_path:
        scene = None   # a distillation trains on its teacher's renders: show the photos
    try:
        if scene is None:
            from fieldkit.data.scene import load_scene

            scene = load_scene(source.scene_path, downscale=source.downscale)
    except Exception:  # thumbnails are a nicety: a moved scene folder must not stop the viewer
        return {}
    train = scene.split("train").tolist()
    bg = torch.tensor(source.background)
    out = {}
    for i in indices:
        img = (composite(scene.image(train[i]), bg).clamp(0, 1) * 255).byte().numpy()
        pil = Image.fromarray(img)
        pil.thumbnail((size, size), Image.BILINEAR)
        out[i] = np.asarray(pil)
    return out


FRUSTUM_LINE_PX = 1.5
"""Frustum outlines are this many pixels wide at any distance (world-unit widths made the
frustums of cameras beside the view a screen-filling mesh of bars)."""


def frustum_scale(source) -> float:
    """Frustum size: a tenth of the median camera distance to the orbit centre, and at most
    half the median distance between neighbouring cameras, so that a dense capture's frustums
    do not run into each other (fox: 0.06 instead of 0.27 box units; lego and beer: ~0.15)."""
    pos = source.cameras.positions.double().numpy()
    scale = 0.1 * float(np.median(np.linalg.norm(pos - source.look_at(), axis=1)))
    if len(pos) > 1:
        gaps = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
        np.fill_diagonal(gaps, np.inf)
        spacing = float(np.median(gaps.min(1)))
        if spacing > 0:
            scale = min(scale, 0.5 * spacing)
    return scale or 0.1


NEAR_EYE = 4.0
"""A frustum whose camera stands closer to the view's eye than this many frustum sizes is
hidden while the eye is there: it would cover over a quarter of the view's height (the
neighbours of the training camera a view starts at, in a dense capture like fox)."""


class Frustums:
    """The training cameras' frustums in the 3D scene (shared by every browser): shown when
    the "training cameras" box is ticked, except those near the eye of the view that moved
    last."""

    def __init__(self, handles: list, positions: np.ndarray, scale: float):
        self.handles = handles
        """viser frustum handles, one a shown camera."""
        self.positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        """[M, 3] their camera centres."""
        self.scale = scale
        """Their size (``frustum_scale``)."""
        self.shown = True
        self.eye: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.handles)

    def __getitem__(self, i: int):
        return self.handles[i]

    def __iter__(self):
        return iter(self.handles)

    def near(self, eye: np.ndarray) -> np.ndarray:
        """[M] bool: the frustums within NEAR_EYE sizes of ``eye`` [3]."""
        d = np.linalg.norm(self.positions - np.asarray(eye, dtype=np.float64), axis=-1)
        return d < NEAR_EYE * self.scale

    def update(self, shown: bool | None = None, eye=None) -> None:
        """Tick or untick them all (``shown``), or move the eye; only changed ones are sent."""
        if shown is not None:
            self.shown = bool(shown)
        if eye is not None:
            self.eye = np.asarray(eye, dtype=np.float64)
        hide = self.near(self.eye) if self.eye is not None else np.zeros(len(self), bool)
        for handle, near in zip(self.handles, hide):
            visible = self.shown and not bool(near)
            if handle.visible != visible:
                handle.visible = visible


def add_frustums(scene_api, source, max_count: int, thumb_size: int, on_click=None,
                 plain: tuple[int, ...] = ()) -> Frustums:
    """Training cameras as frustums named /cameras/NNN (every k-th when more than
    ``max_count``), each with its downscaled image except those in ``plain`` (a camera the view
    starts at: its image would fill the view in front of the render); ``on_click(view)`` moves
    the camera."""
    if source.cameras is None or max_count <= 0:
        return Frustums([], np.zeros((0, 3)), 1.0)
    n = len(source.cameras)
    step = max(1, math.ceil(n / max_count))
    indices = list(range(0, n, step))
    thumbs = thumbnails(source, [i for i in indices if i not in plain], thumb_size)
    scale = frustum_scale(source)
    handles, positions = [], []
    for i in indices:
        view = cameras_to_view(source.cameras, i)
        h = scene_api.add_camera_frustum(
            f"/cameras/{i:04d}", fov=view.fov, aspect=view.aspect, scale=scale,
            thickness=FRUSTUM_LINE_PX, thickness_units="screen", color=(60, 90, 200),
            image=thumbs.get(i), format="jpeg", wxyz=view.wxyz, position=view.position)
        if on_click is not None:
            h.on_click(lambda event, view=view: on_click(event, view))
        handles.append(h)
        positions.append(view.position)
    return Frustums(handles, np.array(positions), scale)


def add_splats(scene_api, source, crop: CropBox | None = None, name: str = "/splats"):
    """The source's Gaussians drawn by the browser (WebGL), box coordinates."""
    s = source.splats_for_browser(crop)
    return scene_api.add_gaussian_splats(name, centers=s["centers"],
                                         covariances=s["covariances"], rgbs=s["rgbs"],
                                         opacities=s["opacities"])


def add_crop_outline(scene_api, crop: CropBox | None, name: str = "/crop"):
    """Wireframe of the crop box (removed when ``crop`` is None)."""
    if crop is None:
        scene_api.remove_by_name(name)
        return None
    return scene_api.add_box(name, color=(255, 120, 0), dimensions=crop.size, wireframe=True,
                             position=crop.center)


def solid_background(color: tuple[float, float, float]) -> np.ndarray:
    """[8, 8, 3] uint8 image of one colour (the canvas background behind browser splats)."""
    c = np.clip(np.asarray(color) * 255 + 0.5, 0, 255).astype(np.uint8)
    return np.broadcast_to(c, (8, 8, 3)).copy()
