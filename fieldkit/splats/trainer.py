"""SplatTrainer: the fieldkit training loop for Gaussian splats (whole images, not ray batches).

Same budgets, progress bar, periodic eval, checkpoints, Ctrl-C handling and run directory as the
volumetric models (``fieldkit/train/trainer.py``); what differs is the step: one training image
per step, rasterized whole, L1 + SSIM loss, the view-space gradients fed to the densifier, and
the 3DGS schedules (SH degree, means learning rate, densification) laid over the run's budget.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace

import torch
from pytorch_msssim import ssim as _ssim
from torch import Tensor

from fieldkit.data.scene import Scene, composite
from fieldkit.errors import warn
from fieldkit.render.splat_cpu import use_cpu_blend
from fieldkit.splats.densify import make_densifier
from fieldkit.train.appearance import pixel_uv
from fieldkit.train.checkpoint import load_checkpoint, rng_state, set_rng_state
from fieldkit.train.config import lr_factor
from fieldkit.train.rays import BACKGROUNDS
from fieldkit.train.trainer import Trainer

REFERENCE_STEPS = 30000
"""Length of the 3DGS schedule the densification and SH steps are written for; a run of any
budget follows it proportionally (by the larger of its step and time fractions)."""
MIN_REFINE_GAP = 50
"""Fewest training steps between two refinements, so the gradient statistics cover several
views even when a short budget compresses the schedule."""
MIN_RESET_GAP = 50
"""Fewest training steps between two opacity resets (and before the first); none happens with
fewer than 4x this many steps left. The Gaussians need that long to regain their opacity, which
a short budget's compressed schedule would not give."""
LARGE_VIEW_PIXELS = 1 << 20
"""Training views larger than this get a warning on the CPU: each step draws a whole view (fox
at 1080 x 1920: ~49 s a step, at 270 x 480: ~2.2 s; apps/results/splat_memory_cpu)."""
SUGGESTED_VIEW_PIXELS = 1 << 18
"""The warning suggests the smallest --downscale that brings a view to at most this many pixels."""
MIN_PATCH = 16
"""Smallest side of a training window (``SplatConfig.step_pixels``), in pixels."""
MEANS_LR_FINAL = 0.01
"""The means' learning rate decays exponentially to this fraction at the end (3DGS)."""


class SplatTrainer(Trainer):
    """Trainer for ``SplatModel`` (see module docstring)."""

    adam_betas = (0.9, 0.999)
    default_pose_lr = 3e-3
    """Each camera moves only in its own steps, once an epoch: on the demo scene with turned
    poses, 1200 steps gave 29.5 dB at 3e-3, 27.1 at 1e-3 and 23.8 without --pose-opt (an
    exploratory run; 800 steps at 3e-3 in apps/results/pose_opt_cpu: 26.85 against 22.50)."""

    def __init__(self, scene: Scene, model, config, run_dir):
        super().__init__(scene, model, config, run_dir)
        self.densifier = make_densifier(model.config.densify, model.config.scene_extent)
        self.train_views = scene.split("train")
        self.last_refine_bucket = 0
        self.last_refine_step = 0
        self.last_reset_step = 0
        self.base_lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}
        self.last_refine: dict = {}
        if self.device.type == "cpu" and scene.format != "teacher":   # not a student's views
            warn_large_views(scene, self.train_views, model.config.step_pixels)
        # the compiled CPU blending builds (once per machine) before the clock starts
        use_cpu_blend(model.config.render.backend, model.params["means"])

    def schedule_step(self) -> int:
        """Position in the 30k-step reference schedule."""
        return int(self.progress() * REFERENCE_STEPS)

    def view(self, step: int) -> int:
        """Training image of ``step``: every image once per epoch, in a seeded random order."""
        n = len(self.train_views)
        g = torch.Generator().manual_seed(self.config.seed * 100003 + step // n)
        return int(self.train_views[torch.randperm(n, generator=g)[step % n]])

    def step(self) -> dict[str, float]:
        t0 = time.perf_counter()
        model, cfg = self.model, self.model.config
        model.train()
        vstep = self.schedule_step()
        model.active_sh_degree = min(cfg.sh_degree, int(vstep // cfg.sh_interval))
        decay = MEANS_LR_FINAL ** self.progress()
        for group in self.optimizer.param_groups:
            base = self.base_lrs[group["name"]]
            group["lr"] = base * decay if group["name"] == "means" else base
        i = self.view(self.step_count)
        camera = self.scene.cameras[i].to(self.device)
        factor = lr_factor(self.step_count, self.progress(), self.config.warmup_steps)
        for r in self.refiners():
            r.set_lr_factor(factor, self.progress())
        if self.poses is not None and self.poses.learning:
            camera = replace(camera, c2w=self.poses.corrections.adjust_c2w(
                camera.c2w, torch.tensor([i], device=self.device)))
        if self.config.background == "random":
            bg = torch.rand(3)
        else:
            bg = torch.tensor(BACKGROUNDS[self.config.background])
        target = composite(self.scene.image(i), bg).to(self.device)  # [H, W, 3]
        full_h, full_w = target.shape[:2]
        camera, window, share = self.window(camera, full_h, full_w)
        target = target[window]
        bg = bg.to(self.device)
        out, proj = model.rasterize(camera, bg)
        proj.means2d.retain_grad()
        rgb = out["rgb"]
        if self.appearance is not None:
            h, w = rgb.shape[:2]
            fg = (out["alpha"].reshape(-1, 1), bg.expand(h * w, 3)) if self.scene.has_alpha \
                else ()
            uv = pixel_uv(full_h, full_w, self.device).view(full_h, full_w, 2)[window]
            rgb = self.appearance.apply(rgb.reshape(-1, 3), uv.reshape(-1, 2),
                                        torch.full((h * w,), i, device=self.device),
                                        *fg).view(h, w, 3)
        l1 = (rgb - target).abs().mean()
        win = min(11, (min(rgb.shape[:2]) // 2) * 2 - 1)
        ssim = _ssim(rgb.permute(2, 0, 1)[None], target.permute(2, 0, 1)[None], data_range=1.0,
                     size_average=True, win_size=win)
        # A window (a cell of a jittered grid) weighs its pixels as a nominal window would.
        loss = share * ((1 - cfg.ssim_weight) * l1 + cfg.ssim_weight * (1 - ssim))
        extra = self.densifier.loss(model.params)
        if extra is not None:
            loss = loss + extra
        loss = self.add_appearance_loss(loss, torch.tensor([i], device=self.device))
        self.optimizer.zero_grad(set_to_none=True)
        for r in self.refiners():
            r.zero_grad()
        if loss.requires_grad:      # not when nothing is in sight (a window of empty space)
            loss.backward()
        if proj.means2d.grad is not None:
            # As if the whole view were drawn: a window's loss weighs each of its pixels
            # (view / window) times more than the view's would.
            h, w = rgb.shape[:2]
            self.densifier.accumulate(proj.means2d.grad * (h * w / share / (full_h * full_w)),
                                      proj.radii, full_w, full_h)
        self.optimizer.step()
        for r in self.refiners():
            r.step()
        self.densifier.after_step(model.params, self.base_lrs["means"] * decay)
        self._densify(vstep)
        mse = float(((rgb.detach().clamp(0, 1) - target) ** 2).mean())
        self.step_count += 1
        self.elapsed += time.perf_counter() - t0
        return {"loss": float(loss.detach()), "mse": mse,
                "psnr": -10 * math.log10(max(mse, 1e-10)), "rays": rgb.shape[0] * rgb.shape[1],
                "samples": model.num_gaussians, "lr": self.optimizer.param_groups[0]["lr"],
                **self.refiner_stats()}

    def window(self, camera, height: int, width: int):
        """(the camera of a random window of a ``width`` x ``height`` view, its (rows,
        columns) slices, its pixels over those of a nominal window) when the view has more
        than ``SplatConfig.step_pixels`` pixels; else the whole view. The window is a cell
        of ``window_grid`` drawn at random: every pixel is drawn as often as any other."""
        limit = self.model.config.step_pixels
        if not limit or width * height <= limit:
            return camera, (slice(None), slice(None)), 1.0
        kx, ky = window_grid(width, height, limit)
        x0, x1 = axis_cell(width, kx)
        y0, y1 = axis_cell(height, ky)
        return (camera.cropped(x0, y0, x1 - x0, y1 - y0), (slice(y0, y1), slice(x0, x1)),
                (x1 - x0) * (y1 - y0) * kx * ky / (width * height))

    def _densify(self, vstep: int) -> None:
        """Refine when the reference schedule crosses a refine boundary (at most every
        MIN_REFINE_GAP steps), and never miss an opacity reset."""
        dc = self.model.config.densify
        bucket = vstep // dc.refine_every
        if bucket == self.last_refine_bucket:
            return
        crossed_reset = vstep // dc.reset_every != self.last_refine_bucket * dc.refine_every \
            // dc.reset_every
        if not crossed_reset and self.step_count - self.last_refine_step < MIN_REFINE_GAP:
            return
        at = (vstep // dc.reset_every) * dc.reset_every if crossed_reset \
            else bucket * dc.refine_every
        allow_reset = (self.step_count - self.last_reset_step >= MIN_RESET_GAP
                       and self.remaining_steps() >= 4 * MIN_RESET_GAP)
        self.last_refine = self.densifier.step(at, self.model.params, self.optimizer,
                                               allow_reset=allow_reset)
        self.last_refine_bucket, self.last_refine_step = bucket, self.step_count
        if self.last_refine["reset"]:
            self.last_reset_step = self.step_count

    def remaining_steps(self) -> float:
        """Steps left in the budget (for a time budget, at the mean step time so far)."""
        c = self.config
        left = float(c.step_budget - self.step_count)
        if c.max_time and self.step_count:
            left = min(left, (c.max_time - self.elapsed) * self.step_count / self.elapsed)
        return left

    def speed_text(self, stats: dict, rays_per_s: float) -> str:
        return f"{self.model.num_gaussians:,} gaussians"

    # ------------------------------------------------------------------ persistence
    def checkpoint_state(self) -> tuple[dict, dict]:
        tensors = {"rng": rng_state(), **self.refiner_tensors(),
                   **{f"densify.{k}": v for k, v in self.densifier.state_dict().items()}}
        return tensors, {"elapsed": self.elapsed, "last_refine_bucket": self.last_refine_bucket,
                         "last_refine_step": self.last_refine_step,
                         "last_reset_step": self.last_reset_step}

    def resume(self) -> None:
        step, model_state, optim_state, tensors, extra = load_checkpoint(self.run_dir)
        self.model.load_state_dict(model_state)  # resizes to the saved Gaussians
        self._make_optimizer()  # the parameters are new objects
        self.optimizer.load_state_dict(optim_state)
        self.base_lrs = {g["name"]: g["lr"] for g in self.model.param_groups(self.lr)}
        set_rng_state(tensors["rng"])
        self.restore_refiners(tensors)
        self.densifier.load_state_dict({k[len("densify."):]: v.to(self.device)
                                        for k, v in tensors.items() if k.startswith("densify.")})
        self.step_count, self.elapsed = step, float(extra["elapsed"])
        self.last_refine_bucket = int(extra["last_refine_bucket"])
        self.last_refine_step = int(extra["last_refine_step"])
        self.last_reset_step = int(extra["last_reset_step"])
        self._truncate_log(step)


def window_grid(width: int, height: int, limit: int) -> tuple[int, int]:
    """(columns, rows) of the grid of windows of about ``limit`` pixels over a ``width`` x
    ``height`` view: the same count along both sides (the windows keep the view's shape), at
    least two windows, none narrower than MIN_PATCH where the view allows."""
    k = max(1, round(math.sqrt(width * height / limit)))
    kx, ky = k, k
    if k == 1:          # at most 2.25 windows' worth: halve the longer side
        kx, ky = (2, 1) if width >= height else (1, 2)
    return (max(1, min(kx, width // MIN_PATCH)), max(1, min(ky, height // MIN_PATCH)))


def axis_cells(n: int, k: int, jitter: Tensor) -> list[int]:
    """Bounds [0, ..., n] of ``k`` cells of range(n), each inner bound moved from its place
    in an even split by ``jitter`` [k - 1] (in [-1, 1]) times a quarter of a cell: cells of
    n / 2k to 3n / 2k."""
    c = n / k
    inner = [round(c * (j + 1 + 0.25 * float(jitter[j]))) for j in range(k - 1)]
    return [0, *inner, n]


def axis_cell(n: int, k: int) -> tuple[int, int]:
    """[start, end): one of ``axis_cells(n, k)`` (random jitter) drawn uniformly. Each index
    lies in one of the k cells whatever the jitter, so every index is drawn 1/k of the time.
    A window placed uniformly inside the view instead draws its edge 1/(n - w + 1) as often
    as its middle: a hash grid -> splat student on fox, with windows of half the sides, came
    out 2.5 dB worse than with whole views there against the teacher, the same in the middle
    (apps/results/splat_windows_cpu/bench.md)."""
    bounds = axis_cells(n, k, torch.rand(max(k - 1, 0)) * 2 - 1)
    j = int(torch.randint(0, k, ()))
    return bounds[j], bounds[j + 1]


def warn_large_views(scene: Scene, views, step_pixels: int = 0) -> None:
    """One warning when a step draws more than ``LARGE_VIEW_PIXELS`` pixels (the largest
    training view, unless ``step_pixels`` windows it: ``SplatConfig.step_pixels``), naming the
    --downscale that brings a view to at most ``SUGGESTED_VIEW_PIXELS`` pixels."""
    cams = scene.cameras
    i = max(views, key=lambda v: int(cams.width[v]) * int(cams.height[v]))
    w, h = int(cams.width[i]), int(cams.height[i])
    if min(w * h, step_pixels or w * h) <= LARGE_VIEW_PIXELS:
        return
    k = 2
    while w * h / (k * k) > SUGGESTED_VIEW_PIXELS:
        k *= 2
    warn(f"the training views are {w}x{h}: a splat step draws a whole view, slow on the CPU "
         f"(fox at 1080x1920: ~49 s a step); --downscale {k * scene.downscale} makes them "
         f"about {w // k}x{h // k}, --splat.step-pixels {1 << 16} draws windows")
