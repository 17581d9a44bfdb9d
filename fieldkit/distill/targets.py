"""Teacher renders as training targets: a bank of rays, or a scene of whole views.

- ``RayBank``: random rays through random novel views with the teacher's premultiplied colour,
  depth and opacity; volumetric students draw their ray batches from it (stage 2).
- ``render_scene``: whole novel views rendered by the teacher as a ``Scene`` (RGBA uint8, straight
  alpha), so that the ordinary trainers (splats: whole images) and evaluation use them as if they
  were photos; the teacher's depth comes alongside.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from fieldkit.data.cameras import Cameras
from fieldkit.data.normalize import Normalisation
from fieldkit.data.scene import Scene
from fieldkit.distill.teacher import Teacher
from fieldkit.progress import progress_iter

BANK_CHUNK = 1 << 14
"""Rays rendered per progress tick when filling a bank."""
VIEW_BANK_KEEP = 0.25
"""Teachers that render whole views (splats) render just enough of the bank's views for the
bank to keep this share of their pixels (at least VIEW_BANK_MIN_VIEWS views): 200 whole views
of 200 x 200 to keep 2^18 rays would render 30x more pixels than used."""
VIEW_BANK_MIN_VIEWS = 16
ERROR_FLOOR = 1e-3
"""Least weight of a ray in error-guided sampling (a ray the student matches still gets
drawn now and then)."""


@dataclass
class RayBank:
    """Rays with the teacher's renders of them (all on the CPU)."""

    origins: Tensor
    """[R, 3] box units."""
    dirs: Tensor
    """[R, 3] unit directions."""
    rgb: Tensor
    """[R, 3] colour over black (premultiplied by opacity)."""
    depth: Tensor
    """[R, 1] expected depth of the hit (distance along the ray)."""
    alpha: Tensor
    """[R, 1] opacity."""

    error: Tensor | None = None
    """[R] the student's last error on each ray (NaN: not drawn yet), for ``sample``'s
    error-guided share; made on the first ``record_error``."""

    def __len__(self) -> int:
        return len(self.origins)

    def sample(self, n: int, guided: float = 0.0) -> dict[str, Tensor]:
        """``n`` rays (with replacement) and their targets, plus their indices ``idx``:
        ``1 - guided`` of them uniform, ``guided`` in proportion to the student's last error
        on each ray (rays not drawn yet count as the mean error; instant-ngp's error map)."""
        n_guided = int(n * guided) if self.error is not None else 0
        idx = torch.randint(len(self), (n - n_guided,))
        if n_guided:
            seen = ~torch.isnan(self.error)
            mean = self.error[seen].mean() if bool(seen.any()) else torch.tensor(1.0)
            weights = torch.where(seen, self.error, mean).clamp_min(ERROR_FLOOR)
            idx = torch.cat([idx, torch.multinomial(weights, n_guided, replacement=True)])
        return {"idx": idx, **{k: getattr(self, k)[idx]
                               for k in ("origins", "dirs", "rgb", "depth", "alpha")}}

    def record_error(self, idx: Tensor, error: Tensor) -> None:
        """Remember the student's error [n] on rays ``idx`` [n] (CPU or any device)."""
        if self.error is None:
            self.error = torch.full((len(self),), float("nan"))
        self.error[idx.cpu()] = error.detach().float().cpu()


def build_ray_bank(teacher: Teacher, cameras: Cameras, n_rays: int,
                   generator: torch.Generator) -> RayBank:
    """``n_rays`` rays through uniformly random points of the images of ``cameras``, rendered by
    the teacher (volumetric teachers render the rays themselves; splat teachers render whole
    views, as few as keep VIEW_BANK_KEEP of their pixels, and the rays are drawn from their
    pixel centres)."""
    if teacher.is_splat:
        return _bank_from_views(teacher, cameras, n_rays, generator)
    cam = torch.randint(len(cameras), (n_rays,), generator=generator)
    uv = torch.rand(n_rays, 2, generator=generator)
    xy = uv * torch.stack([cameras.width[cam], cameras.height[cam]], -1).float()
    origins, dirs = cameras.rays(cam, xy)
    parts: dict[str, list[Tensor]] = {"rgb": [], "depth": [], "alpha": []}
    chunks = list(zip(origins.split(BANK_CHUNK), dirs.split(BANK_CHUNK)))
    for o, d in progress_iter(chunks, total=len(chunks), desc="teacher rays"):
        out = teacher.render_rays(o, d)
        for k in parts:
            parts[k].append(out[k])
    return RayBank(origins.float(), dirs.float(), *(torch.cat(parts[k]) for k in parts))


def _bank_from_views(teacher: Teacher, cameras: Cameras, n_rays: int,
                     generator: torch.Generator) -> RayBank:
    pixels = int(cameras.width[0]) * int(cameras.height[0])
    n_views = max(VIEW_BANK_MIN_VIEWS, -(-n_rays // int(VIEW_BANK_KEEP * pixels)))
    cameras = cameras[:min(len(cameras), n_views)]   # the views are random already
    cols: dict[str, list[Tensor]] = {k: [] for k in ("origins", "dirs", "rgb", "depth", "alpha")}
    for i in progress_iter(range(len(cameras)), total=len(cameras), desc="teacher views"):
        out = teacher.render_view(cameras[i])
        o, d = cameras.image_rays(i)
        for k, v in (("origins", o), ("dirs", d), *out.items()):
            cols[k].append(v.reshape(-1, v.shape[-1]).float())
    full = {k: torch.cat(v) for k, v in cols.items()}
    keep = torch.randperm(len(full["origins"]), generator=generator)[:n_rays]
    return RayBank(**{k: v[keep] for k, v in full.items()})


@dataclass
class TeacherViews:
    """Whole views rendered by the teacher, as a scene (splits ``train`` and ``val``)."""

    scene: Scene
    depth: list[Tensor]
    """Per view [H, W, 1] teacher depth."""
    seconds: float
    """Time spent rendering them."""
    frame_seconds: list[float]
    """Per view, the teacher's render time."""


def render_scene(teacher: Teacher, train: Cameras, held_out: Cameras,
                 normalisation: Normalisation, root: Path) -> TeacherViews:
    """Render ``train`` then ``held_out`` views with the teacher into a ``Scene`` whose
    ``train`` split holds the first and whose ``val``/``test`` splits hold the second."""
    import time

    t0 = time.perf_counter()
    cams = Cameras(torch.cat([train.c2w, held_out.c2w]), torch.cat([train.K, held_out.K]),
                   torch.cat([train.width, held_out.width]),
                   torch.cat([train.height, held_out.height]))
    pixels, depths, secs = [], [], []
    for i in progress_iter(range(len(cams)), total=len(cams), desc="teacher views"):
        t1 = time.perf_counter()
        out = teacher.render_view(cams[i])
        secs.append(time.perf_counter() - t1)
        alpha = out["alpha"].clamp(0, 1)
        rgb = (out["rgb"] / alpha.clamp_min(1e-6)).clamp(0, 1)  # straight alpha
        rgba = torch.cat([rgb, alpha], -1)
        pixels.append((rgba * 255 + 0.5).to(torch.uint8).reshape(-1, 4))
        depths.append(out["depth"])
    sizes = torch.tensor([0] + [len(p) for p in pixels])
    n_train = len(train)
    held = torch.arange(n_train, len(cams))
    scene = Scene(root=Path(root), format="teacher", cameras=cams,
                  image_paths=[Path(root) / f"view_{i:04d}" for i in range(len(cams))],
                  pixels=torch.cat(pixels), offsets=torch.cumsum(sizes, 0),
                  splits={"train": torch.arange(n_train) if n_train else held, "val": held,
                          "test": held},
                  normalisation=normalisation, camera_models=["PINHOLE"] * len(cams))
    return TeacherViews(scene, depths, time.perf_counter() - t0, secs)
