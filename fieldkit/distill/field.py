"""Volumetric students (hash grid, tri-plane, MLP): PVD-style progressive distillation.

Stage 1 (volume-aligned): density and colour are matched at 3D points, most drawn where the
teacher has mass, the rest uniform in the box; density is compared as log(sigma + floor) with
the teacher's capped, a numerically safe space; a splat teacher answers for the volume its
Gaussians make (``Teacher.splat_field``). Stage 2: rendered colour (over a random background),
opacity and depth are matched on rays of random novel views (``RayBank``; half of each batch
drawn where the student's last error was largest), with a little of the stage-1 loss kept
(field teachers). The student's occupancy grid starts from the teacher's (and skips the
refresh warm-up).

The loop, budgets, schedule, checkpoints, Ctrl-C and periodic evaluation (on held-out teacher
views, so the logged eval PSNR is student vs teacher) are ``Trainer``'s.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from fieldkit.distill.config import DistillConfig
from fieldkit.distill.targets import RayBank, TeacherViews
from fieldkit.distill.teacher import Teacher
from fieldkit.errors import warn
from fieldkit.train.trainer import Trainer


def init_grid_from_teacher(student, teacher: Teacher) -> None:
    """Start ``student``'s occupancy grid (EMA density and bitfield) from the teacher's density
    at its cells, in the student's own units (density x its step size)."""
    grid = student.grid
    sigma = teacher.cell_density(grid).to(grid.density)
    grid.density.copy_(sigma * student.config.render.step_size)
    threshold = torch.clamp(grid.density.mean(), max=0.01)
    grid.binary.copy_((grid.density > threshold).reshape(grid.binary.shape))


POINT_BANK_SHARE = 0.2
"""Under a time budget, the bank may take at most this share of the student's optimisation
time: its first points are timed and only as many answered as fit. Lego's 23k Gaussians
answer 2^19 points in ~10 s of a 69 s optimisation (a tenth cut it to 372k); a 3DGS file of
2.3M Gaussians answers ~10k points a second, and 2^19 of them took the whole 60 s of a
120 s distillation before (apps/results/splat_scale_cpu)."""
POINT_BANK_MIN = 1 << 15
"""The bank never holds fewer points than this (nor more than asked)."""
POINT_BANK_CHUNK = 1 << 14
"""Points answered at a time while the bank is built (the first chunk times the teacher)."""


class FieldDistillTrainer(Trainer):
    """Trains a volumetric student on a teacher's points and rays (see module docstring)."""

    def __init__(self, views: TeacherViews, student, config, run_dir, teacher: Teacher,
                 bank: RayBank, distill: DistillConfig):
        super().__init__(views.scene, student, config, run_dir)
        self.teacher, self.bank, self.distill = teacher, bank, distill
        self.generator = torch.Generator().manual_seed(distill.seed + 1)
        self._stage: int | None = None
        self.point_bank: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
        self.bank_points: int | None = None
        """Points the stage-1 bank keeps once its timing decided (saved with checkpoints, so
        that a resume answers the same bank)."""
        self.points_per_step = distill.points_per_step or self.target_samples
        """Stage-1 points a step: the config's, else as many as the student's ray samples."""
        self.stage2_points = distill.stage2_points or self.target_samples // 2
        """Points a stage-2 step keeps the stage-1 loss on."""
        self.volume_fraction = distill.volume_fraction_for(student.kind)
        """Share of the budget spent in stage 1."""

    def checkpoint_state(self) -> tuple[dict[str, Tensor], dict]:
        """The trainer's, plus the point generator, the stage and the bank's error map
        (exact resume)."""
        tensors, extra = super().checkpoint_state()
        tensors = {**tensors, "distill_rng": self.generator.get_state()}
        if self.bank.error is not None:
            tensors["bank_error"] = self.bank.error
        return tensors, {**extra, "distill_stage": self._stage,
                         "point_bank_points": self.bank_points}

    def restore_state(self, tensors: dict[str, Tensor], extra: dict) -> None:
        if "distill_rng" in tensors:  # checkpoints written before it was saved lack it
            self.generator.set_state(tensors["distill_rng"].to(torch.uint8).cpu())
        if "bank_error" in tensors:
            self.bank.error = tensors["bank_error"].float().cpu().clone()
        self._stage = extra.get("distill_stage")
        self.bank_points = extra.get("point_bank_points")

    def update_grid(self) -> None:
        """No warm-up of full refreshes: the grid starts from the teacher's, so the sampled
        refresh holds from the first step (the warm-up cost a hash-grid student ~5 s, 7%, of
        a 75 s distillation on lego: 16 refreshes of 0.3 s). None in stage 1, which marches
        no rays: the grid stays the teacher's until stage 2."""
        if self.stage() == 1:
            return
        self.model.update_grid(self.step_count, warmup_steps=0)

    def stage(self) -> int:
        return 1 if self.progress() < self.volume_fraction else 2

    def point_loss(self, n: int) -> tuple[Tensor, float]:
        """Stage-1 loss on ``n`` points, and the colour MSE there (weighted by teacher
        opacity)."""
        dc = self.distill
        pts, dirs, t_rgb, t_sigma = self.point_targets(n)
        s_rgb, s_sigma = self.model.field(pts, dirs)
        lo = dc.density_floor
        target = torch.log(t_sigma.clamp(max=dc.density_cap) + lo)
        pred = torch.log(s_sigma + lo)
        both_opaque = (t_sigma >= dc.density_cap) & (s_sigma.detach() >= dc.density_cap)
        loss = dc.density_weight * (F.smooth_l1_loss(pred, target, reduction="none")
                                    * ~both_opaque).mean()
        w = 1 - torch.exp(-t_sigma * self.model.config.render.step_size)  # teacher alpha
        denom = w.sum().clamp_min(1e-6)
        loss = loss + (w[:, None] * (s_rgb - t_rgb).abs()).sum() / (3 * denom)
        mse = float((w[:, None] * (s_rgb.detach() - t_rgb) ** 2).sum() / (3 * denom))
        return loss, mse

    def point_targets(self, n: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``n`` stage-1 points [n, 3], their directions [n, 3] and the teacher's colour
        [n, 3] and density [n] there: drawn from a bank of points the teacher answered once
        (``DistillConfig.point_bank_for``), or fresh."""
        size = self.distill.point_bank_for(self.model.kind, self.teacher.is_splat)
        if not size:
            pts, dirs = self.draw_points(n)
            return (pts, dirs, *self.teacher.query(pts, dirs))
        if self.point_bank is None:  # from its own seed: the same bank after a resume
            pts, dirs = self.draw_points(size, torch.Generator().manual_seed(
                self.distill.seed + 3))
            self.point_bank = self.answer_bank(pts, dirs)
        bank = self.point_bank
        pick = torch.randint(len(bank[0]), (n,), generator=self.generator).to(self.device)
        return tuple(t[pick] for t in bank)

    def answer_bank(self, pts: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(points, dirs, teacher colour, teacher density) of the first of ``pts`` [n, 3] that
        the teacher answers within POINT_BANK_SHARE of a time budget (all without one; as many
        as before for a resumed run, ``bank_points``)."""
        size, budget, fixed = len(pts), self.config.max_time, self.bank_points
        # mixed, so that the timed first points cost what the rest do (the draw puts surface,
        # mass and uniform points in blocks); a fixed order: a resume draws the same bank
        order = torch.randperm(size, generator=torch.Generator().manual_seed(0)).to(pts.device)
        pts, dirs = pts[order], dirs[order]
        if self.teacher.is_splat:
            self.teacher.cells()   # registered once, before the timing
        keep, done, t0 = size if fixed is None else min(size, fixed), 0, time.perf_counter()
        answers: list[tuple[Tensor, Tensor]] = []
        while done < keep:
            end = min(done + POINT_BANK_CHUNK, keep)
            answers.append(self.teacher.query(pts[done:end], dirs[done:end]))
            done = end
            if budget and fixed is None and done == min(POINT_BANK_CHUNK, size) and done < size:
                each = (time.perf_counter() - t0) / done
                fit = int(POINT_BANK_SHARE * budget / max(each, 1e-12))
                keep = max(min(POINT_BANK_MIN, size), min(size, fit))
        self.bank_points = keep
        if keep < size and fixed is None:
            warn(f"the teacher's stage-1 point bank was cut to {keep:,} of {size:,} "
                 f"points to fit the time budget ({(time.perf_counter() - t0) / keep * 1e3:.2g}"
                 " ms a point); a longer --max-time gives the student more")
        rgb, sigma = (torch.cat(t) for t in zip(*answers))
        return pts[:keep], dirs[:keep], rgb, sigma

    def draw_points(self, n: int, generator: torch.Generator | None = None
                    ) -> tuple[Tensor, Tensor]:
        """[n, 3] stage-1 points (near the surface the teacher shows, in its mass, uniform in
        the box) and their view directions [n, 3], on the model's device; drawn with
        ``generator`` (default: the trainer's)."""
        dc, g = self.distill, generator or self.generator
        m = int(n * dc.mass_fraction)
        s = int(m * dc.surface_fraction)
        bound = self.model.config.render.bound
        surf, surf_dirs = self.surface_points(s, g)
        pts = torch.cat([surf, self.teacher.mass_points(m - s, g).cpu(),
                         (torch.rand(n - m, 3, generator=g) * 2 - 1) * bound])
        dirs = torch.cat([surf_dirs, F.normalize(torch.randn(n - s, 3, generator=g), dim=-1)])
        return pts.to(self.device), dirs.to(self.device)

    def surface_points(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """[n, 3] points near the surface the teacher shows along bank rays (its depth, moved
        by a few marching steps) and the rays' directions [n, 3], on the CPU."""
        idx = torch.randint(len(self.bank), (n,), generator=generator)
        o, d = self.bank.origins[idx], self.bank.dirs[idx]
        step = self.model.config.render.step_size
        t = self.bank.depth[idx] + torch.randn(n, 1, generator=generator) * 4 * step
        return o + d * t, d

    def ray_loss(self) -> tuple[Tensor | None, float, int, int]:
        """Stage-2 loss on a batch of bank rays: (loss or None, colour MSE, rays, samples)."""
        dc = self.distill
        b = {k: v.to(self.device) for k, v in
             self.bank.sample(self.n_rays, dc.error_sampling).items()}
        n = len(b["origins"])
        bg = torch.rand(n, 3, device=self.device)
        target = b["rgb"] + (1 - b["alpha"]) * bg
        out = self.model.render_rays(b["origins"], b["dirs"], bg, stratified=True)
        n_samples = int(out["num_samples"])
        sq = (out["rgb"].detach() - target) ** 2
        mse = float(sq.mean())
        if dc.error_sampling:
            self.bank.record_error(b["idx"], sq.mean(-1))
        if not n_samples:
            return None, mse, n, 0
        loss = F.smooth_l1_loss(out["rgb"], target)
        loss = loss + dc.alpha_weight * (out["alpha"] - b["alpha"]).abs().mean()
        loss = loss + dc.depth_weight * (b["alpha"] * (out["depth"] - b["depth"]).abs()).mean()
        self._adapt_batch(n_samples)
        return loss, mse, n, n_samples

    def step(self) -> dict[str, float]:
        t0 = time.perf_counter()
        factor = self._start_step()
        dc = self.distill
        stage = self.stage()
        if self._stage == 1 and stage == 2:
            # Fresh Adam moments: stage 1's gradient scale would stall stage 2's first steps.
            self._make_optimizer()
        self._stage = stage
        if stage == 1:
            loss, mse = self.point_loss(self.points_per_step)
            rays, samples = self.points_per_step, self.points_per_step
        else:
            loss, mse, rays, samples = self.ray_loss()
            if dc.stage2_point_weight and not self.teacher.is_splat:
                p_loss, _ = self.point_loss(self.stage2_points)
                loss = p_loss * dc.stage2_point_weight + (0 if loss is None else loss)
        reg = self.model.regularization()
        if reg is not None and loss is not None:
            loss = loss + reg
        if loss is not None:
            self.backward_and_step(loss)
        self.step_count += 1
        self.elapsed += time.perf_counter() - t0
        psnr = -10 * math.log10(max(mse, 1e-10)) if mse else 0.0
        return {"loss": float(loss.detach()) if loss is not None else 0.0, "mse": mse,
                "psnr": psnr, "rays": rays, "samples": samples, "lr": self.lr * factor,
                "stage": stage}

    def speed_text(self, stats: dict, rays_per_s: float) -> str:
        what = "points" if stats.get("stage") == 1 else "rays"
        return f"stage {int(stats.get('stage', 1))}: {rays_per_s / 1000:.1f}k {what}/s"
