"""Teacher renders as training targets: a bank of rays, or a scene of whole views.

- ``RayBank``: random rays through random novel views with the teacher's premultiplied colour,
  depth and opacity; volumetric students draw their ray batches from it (stage 2).
- ``render_scene``: whole views rendered by the teacher as a ``Scene`` (RGBA uint8, straight
  alpha), so that the ordinary trainers (splats: whole images) and evaluation use them as if they
  were photos; the teacher's depth comes alongside.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from fieldkit.data.cameras import Cameras
from fieldkit.data.normalize import Normalisation
from fieldkit.data.scene import Scene
from fieldkit.distill.budget import RenderBudget
from fieldkit.distill.teacher import Teacher
from fieldkit.encoders.hashgrid_fast import compile_if_it_pays
from fieldkit.progress import progress_iter
from fieldkit.train.interrupt import stop_here_if_requested

BANK_CHUNK = 1 << 14
"""Rays rendered per progress tick when filling a bank."""
VIEW_BANK_KEEP = 0.25
"""Teachers that render whole views (splats) render just enough of the bank's views for the
bank to keep this share of their pixels (at least VIEW_BANK_MIN_VIEWS views): 200 whole views
of 200 x 200 to keep 2^18 rays would render 30x more pixels than used."""
VIEW_BANK_MIN_VIEWS = 16
MIN_BANK_RAYS = 1 << 16
"""Least rays a field teacher renders for the bank, however short the time budget."""
MIN_TRAIN_VIEWS = 16
"""Least views a teacher renders for a splat student, however short the time budget."""
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
                   generator: torch.Generator, budget: RenderBudget | None = None) -> RayBank:
    """``n_rays`` rays through uniformly random points of the images of ``cameras``, rendered by
    the teacher (volumetric teachers render the rays themselves; splat teachers render whole
    views, as few as keep VIEW_BANK_KEEP of their pixels, and the rays are drawn from their
    pixel centres). With a ``budget``, fewer rays (at least MIN_BANK_RAYS) when the renders
    would not fit; the rays are random, so the ones rendered are a random subset."""
    if teacher.is_splat:
        return _bank_from_views(teacher, cameras, n_rays, generator, budget)
    cam = torch.randint(len(cameras), (n_rays,), generator=generator)
    uv = torch.rand(n_rays, 2, generator=generator)
    xy = uv * torch.stack([cameras.width[cam], cameras.height[cam]], -1).float()
    origins, dirs = cameras.rays(cam, xy)
    chunks = list(zip(origins.split(BANK_CHUNK), dirs.split(BANK_CHUNK)))
    outs = []
    if chunks:
        first, seconds = _timed(teacher.render_rays, budget, *chunks[0])
        outs.append(first)
        if budget is not None:
            n = budget.count("bank_chunks", f"chunks of {BANK_CHUNK} teacher rays",
                             len(chunks), -(-MIN_BANK_RAYS // BANK_CHUNK), seconds)
            chunks = chunks[:n]
    for o, d in progress_iter(chunks[1:], total=len(chunks) - 1, desc="teacher rays"):
        outs.append(_timed(teacher.render_rays, budget, o, d)[0])
    n = sum(len(o["rgb"]) for o in outs)
    return RayBank(origins[:n].float(), dirs[:n].float(),
                   *(torch.cat([o[k] for o in outs]) for k in ("rgb", "depth", "alpha")))


def _timed(render, budget: RenderBudget | None, *args) -> tuple[dict[str, Tensor], float]:
    """(``render(*args)``, its seconds), the seconds counted in ``budget``."""
    t0 = time.perf_counter()
    out = render(*args)
    seconds = time.perf_counter() - t0
    if budget is not None:
        budget.add(seconds)
    return out, seconds


def _bank_from_views(teacher: Teacher, cameras: Cameras, n_rays: int,
                     generator: torch.Generator, budget: RenderBudget | None) -> RayBank:
    pixels = int(cameras.width[0]) * int(cameras.height[0])
    n_views = max(VIEW_BANK_MIN_VIEWS, -(-n_rays // int(VIEW_BANK_KEEP * pixels)))
    n_views = min(len(cameras), n_views)   # the views are random already
    cols: dict[str, list[Tensor]] = {k: [] for k in ("origins", "dirs", "rgb", "depth", "alpha")}

    def add(i: int) -> float:
        out, seconds = _timed(teacher.render_view, budget, cameras[i])
        o, d = cameras.image_rays(i)
        for k, v in (("origins", o), ("dirs", d), *out.items()):
            cols[k].append(v.reshape(-1, v.shape[-1]).float())
        return seconds

    seconds = add(0)
    if budget is not None:
        n_views = budget.count("bank_views", "teacher views for the ray bank", n_views,
                               VIEW_BANK_MIN_VIEWS, seconds)
    for i in progress_iter(range(1, n_views), total=n_views - 1, desc="teacher views"):
        add(i)
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
    num_train: int
    """Views of the ``train`` split (the first ones; the held-out views follow)."""


def render_scene(teacher: Teacher, train: Cameras, held_out: Cameras,
                 normalisation: Normalisation, root: Path,
                 budget: RenderBudget | None = None) -> TeacherViews:
    """Render ``train`` then ``held_out`` views with the teacher into a ``Scene`` whose
    ``train`` split holds the first and whose ``val``/``test`` splits hold the second.

    With a ``budget``, only as many ``train`` views (at least MIN_TRAIN_VIEWS) as fit in it,
    timed by the held-out views' renders (rendered first; they stay out of the budget, being
    evaluation), and no more once its seconds are spent (views slower than the estimate: on
    fox, held-out views at 1.45 s each promised 100 views that took 1.77 s each, 27 s over a
    300 s budget; apps/results/distill_splat_views_cpu/bench.md)."""
    t0 = time.perf_counter()
    held = []
    for i in progress_iter(range(len(held_out)), total=len(held_out), desc="held-out views"):
        stop_here_if_requested()
        held.append(_render_rgba(teacher, held_out[i]))
        if i == 0:
            _compile_teacher(teacher, held[0][2] * (len(held_out) - 1 + len(train)), budget)
    renders, asked = [], len(train)
    if not held and len(train):
        renders = [_render_rgba(teacher, train[0])]
        if budget is not None:
            budget.add(renders[0][2])
        _compile_teacher(teacher, renders[0][2] * (len(train) - 1), budget)
    if budget is not None and len(train):
        each = (float(torch.tensor([h[2] for h in held]).median()) if held
                else renders[0][2])
        train = train[:budget.count("views", "teacher views", asked, MIN_TRAIN_VIEWS, each)]
    for i in progress_iter(range(len(renders), len(train)), total=len(train) - len(renders),
                           desc="teacher views"):
        if budget is not None and i >= MIN_TRAIN_VIEWS and budget.exhausted("views"):
            budget.stop("views", "teacher views", asked, i)   # slower than the estimate
            break
        stop_here_if_requested()
        renders.append(_render_rgba(teacher, train[i]))
        if budget is not None:
            budget.add(renders[-1][2])
    train = train[:len(renders)]
    renders += held
    cams = Cameras(torch.cat([train.c2w, held_out.c2w]), torch.cat([train.K, held_out.K]),
                   torch.cat([train.width, held_out.width]),
                   torch.cat([train.height, held_out.height]))
    sizes = torch.tensor([0] + [len(r[0]) for r in renders])
    n_train = len(train)
    held_idx = torch.arange(n_train, len(cams))
    scene = Scene(root=Path(root), format="teacher", cameras=cams,
                  image_paths=[Path(root) / f"view_{i:04d}" for i in range(len(cams))],
                  pixels=torch.cat([r[0] for r in renders]), offsets=torch.cumsum(sizes, 0),
                  splits={"train": torch.arange(n_train) if n_train else held_idx,
                          "val": held_idx, "test": held_idx},
                  normalisation=normalisation, camera_models=["PINHOLE"] * len(cams))
    return TeacherViews(scene, [r[1] for r in renders], time.perf_counter() - t0,
                        [r[2] for r in renders], n_train)


def _compile_teacher(teacher: Teacher, seconds_ahead: float, budget: RenderBudget | None
                     ) -> None:
    """Compile a hash-grid teacher for rendering when the renders ahead (``seconds_ahead`` at
    the speed of the first) pay for it (``compile_if_it_pays``); the compilation's seconds
    count in ``budget`` as rendering."""
    t0 = time.perf_counter()
    if compile_if_it_pays(teacher.model, seconds_ahead) and budget is not None:
        budget.add(time.perf_counter() - t0)


def _render_rgba(teacher: Teacher, camera: Cameras) -> tuple[Tensor, Tensor, float]:
    """(pixels [H*W, 4] uint8 straight alpha, depth [H, W, 1], seconds) of one view."""
    t0 = time.perf_counter()
    out = teacher.render_view(camera)
    seconds = time.perf_counter() - t0
    alpha = out["alpha"].clamp(0, 1)
    rgb = (out["rgb"] / alpha.clamp_min(1e-6)).clamp(0, 1)  # straight alpha
    rgba = torch.cat([rgb, alpha], -1)
    return (rgba * 255 + 0.5).to(torch.uint8).reshape(-1, 4), out["depth"], seconds
