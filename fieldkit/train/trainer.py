"""The training loop: batches, Adam, schedule, budgets, periodic eval, checkpoints, Ctrl-C.

The viewer and the trainer meet at two functions: ``Trainer.step()`` and ``Trainer.render``.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from fieldkit.data.cameras import Cameras
from fieldkit.data.scene import Scene, composite
from fieldkit.errors import FieldkitError
from fieldkit.progress import make_progress
from fieldkit.render.losses import contracted_intervals, distortion_loss
from fieldkit.train import interrupt
from fieldkit.train.appearance import AppearanceRefiner
from fieldkit.train.checkpoint import (atomic_write_bytes, load_checkpoint, rng_state,
                                       save_checkpoint, set_rng_state)
from fieldkit.train.config import TrainConfig, lr_factor
from fieldkit.train.metrics import psnr
from fieldkit.train.optim import make_adam
from fieldkit.train.plot import plot_psnr
from fieldkit.train.pose_opt import POSES_FILE, PoseRefiner
from fieldkit.train.rays import BACKGROUNDS, RayBatcher, resolve_background


class Trainer:
    """Optimises ``model`` (any registered model: ``fieldkit/fields/registry.py``) on ``scene``;
    writes into ``run_dir``."""

    adam_betas: tuple[float, float] = (0.9, 0.99)
    """Adam's betas (instant-ngp's; the splat trainer keeps 3DGS's 0.999)."""
    default_pose_lr: float = 1e-3
    """``--pose-lr`` when none is given: on the demo scene with its training poses turned by
    ~2 degrees, 1e-3 took a tri-plane from 19.7 to 24.3 dB and a hash grid from 19.6 to 25.8
    in 600 steps; 3e-3 diverged on the hash grid (apps/results/pose_opt_cpu)."""

    default_appearance_lr: float = 1e-2
    """``--appearance-lr`` when none is given: on the demo scene with varied photos, a
    tri-plane of 400 steps reached 24.23 dB with 1e-2, 24.15 with 2e-3 (gsplat's rate for its
    bilateral grids) and 23.73 without transforms (apps/results/appearance_cpu)."""

    def __init__(self, scene: Scene, model: torch.nn.Module, config: TrainConfig, run_dir: Path):
        config = replace(config, background=resolve_background(config.background, scene))
        self.scene, self.model, self.config, self.run_dir = scene, model, config, Path(run_dir)
        torch.manual_seed(config.seed)
        self.batcher = RayBatcher(scene, scene.split("train"), config.background)
        self.device = next(model.parameters()).device
        """Where the model lives; ray batches and cameras move there, images stay on the CPU."""
        self.lr = config.lr if config.lr is not None else model.default_lr
        self.target_samples: int | None = config.target_samples or getattr(
            model, "default_target_samples", None)
        """Samples per step the ray batch adapts to: the config's, else the model's own (None
        for a model that marches no rays: splats)."""
        self._make_optimizer()
        pose_start = config.pose_start if config.pose_start is not None else getattr(
            model, "default_pose_start", 0.0)
        if not 0.0 <= pose_start < 1.0:
            raise FieldkitError(f"--pose-start is a fraction of the budget in [0, 1), not "
                                f"{pose_start:g}")
        self.poses = PoseRefiner(scene.cameras, scene.split("train"),
                                 config.pose_lr or self.default_pose_lr,
                                 config.pose_weight_decay, pose_start, self.device) \
            if config.pose_opt else None
        """Pose corrections of the training cameras (``--pose-opt``), else None."""
        self.appearance = AppearanceRefiner(
            len(scene), scene.split("train"), config.appearance,
            config.appearance_lr or self.default_appearance_lr, config.appearance_tv,
            config.appearance_start, self.device) \
            if config.appearance != "off" else None
        """Per-image colour transforms of the training views (``--appearance``), else None."""
        self.step_count = 0
        self.elapsed = 0.0  # seconds of training, evaluation and checkpoints excluded
        self.n_rays = config.init_rays
        self._stop = False
        self._log_lines: list[str] = []

    def _make_optimizer(self) -> None:
        groups = self.model.param_groups(self.lr)
        self.optimizer = make_adam(groups, self.lr, betas=self.adam_betas)

    # ------------------------------------------------------------------ one step
    def progress(self) -> float:
        c = self.config
        parts = [self.step_count / c.step_budget]
        if c.max_time:
            parts.append(self.elapsed / c.max_time)
        return min(1.0, max(parts))

    def step(self) -> dict[str, float]:
        """One optimiser step on a fresh ray batch. Returns loss, psnr, rays and samples."""
        t0 = time.perf_counter()
        factor = self._start_step()
        origins, dirs, target, bg, image, uv = (t.to(self.device) for t in
                                                self.batcher.sample(self.n_rays))
        if self.poses is not None and self.poses.learning:
            origins, dirs = self.poses.corrections.adjust_rays(origins, dirs, image)
        out = self.model.render_rays(origins, dirs, bg, stratified=True)
        n_samples = int(out["num_samples"])
        rgb = out["rgb"] if self.appearance is None else self.appearance.apply(
            out["rgb"], uv, image, *((out["alpha"], bg) if self.scene.has_alpha else ()))
        loss = torch.nn.functional.smooth_l1_loss(rgb, target) if n_samples else None
        if loss is not None:
            loss = self.add_appearance_loss(loss, image)
            if self.config.distortion_weight:
                loss = loss + self.config.distortion_weight * self._distortion(out, origins, dirs)
            reg = self.model.regularization()
            if reg is not None:
                loss = loss + reg
            self.backward_and_step(loss)
        mse = float(((rgb.detach() - target) ** 2).mean())
        loss_value = float(loss.detach()) if loss is not None else 0.0
        self._adapt_batch(n_samples)
        self.step_count += 1
        self.elapsed += time.perf_counter() - t0
        return {"loss": loss_value, "mse": mse,
                "psnr": float(-10 * torch.log10(torch.tensor(max(mse, 1e-10)))),
                "rays": len(origins), "samples": n_samples, "lr": self.lr * factor,
                **self.refiner_stats()}

    def refiner_stats(self) -> dict[str, float]:
        """The pose corrections' and appearance transforms' mean sizes for the log (nothing
        without ``--pose-opt`` and ``--appearance``)."""
        stats = self.poses.stats() if self.poses is not None else {}
        if self.appearance is not None:
            stats.update(self.appearance.stats(self.scene.split("train")))
        return stats

    def refiners(self) -> list:
        """The per-camera parameters learned beside the model (pose corrections, appearance
        transforms), each with its own optimiser."""
        return [r for r in (self.poses, self.appearance) if r is not None]

    def add_appearance_loss(self, loss: Tensor, image: Tensor) -> Tensor:
        """``loss`` plus the appearance grids' regulariser over views ``image`` [R], if any."""
        extra = self.appearance.loss(image) if self.appearance is not None else None
        return loss if extra is None else loss + extra

    def backward_and_step(self, loss: Tensor) -> None:
        """Gradients of ``loss``, then a step of the model's optimiser and of each refiner's."""
        self.optimizer.zero_grad(set_to_none=True)
        for r in self.refiners():
            r.zero_grad()
        loss.backward()
        self.optimizer.step()
        for r in self.refiners():
            r.step()

    def _distortion(self, out: dict, origins: Tensor, dirs: Tensor) -> Tensor:
        """Distortion loss of a rendered batch, measured in contracted space."""
        s = out["samples"]
        s0, s1 = contracted_intervals(origins, dirs, s.t_starts, s.t_ends, s.ray_indices,
                                      len(origins))
        return distortion_loss(out["weights"], s0, s1, s.ray_indices, len(origins))

    def _start_step(self) -> float:
        """Train mode, occupancy-grid refresh and this step's learning rate; returns the
        schedule's factor."""
        self.model.train()
        self.update_grid()
        factor = lr_factor(self.step_count, self.progress(), self.config.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * factor
        for r in self.refiners():
            r.set_lr_factor(factor, self.progress())
        return factor

    def update_grid(self) -> None:
        """Refresh the model's occupancy grid (its own schedule: every 16 steps, all cells over
        the first 256)."""
        self.model.update_grid(self.step_count)

    def _adapt_batch(self, n_samples: int) -> None:
        """Resize the ray batch so each step sees about target_samples samples."""
        if n_samples:
            wanted = self.n_rays * self.target_samples / n_samples
            self.n_rays = int(min(self.config.max_rays, max(256, round(wanted))))

    def render(self, camera: Cameras, background: str | None = None) -> dict[str, Tensor]:
        """Full image from one camera (eval mode, no grad): rgb/depth/alpha [H, W, C] on the
        CPU."""
        name = background or self.eval_background
        self.model.eval()
        out = self.model.render(camera.to(self.device),
                                torch.tensor(BACKGROUNDS[name], device=self.device))
        return {k: v.cpu() for k, v in out.items()}

    @property
    def eval_background(self) -> str:
        return "white" if self.config.background == "random" else self.config.background

    def evaluate(self, n_views: int) -> float:
        """Mean PSNR on the first ``n_views`` held-out views."""
        views = self.scene.split("val")[:n_views]
        bg = torch.tensor(BACKGROUNDS[self.eval_background])
        scores = []
        for i in views.tolist():
            pred = self.render(self.scene.cameras[i])["rgb"]
            scores.append(psnr(pred, composite(self.scene.image(i), bg)))
        return sum(scores) / max(1, len(scores))

    # ------------------------------------------------------------------ persistence
    def save(self) -> None:
        """Atomic checkpoint (model, occupancy grid, optimizer, RNG) + model file + log."""
        tensors, extra = self.checkpoint_state()
        save_checkpoint(self.run_dir, self.step_count, self.model.state_dict(),
                        self.optimizer.state_dict(), tensors, extra)
        self.model.save(self.run_dir, weights=self.config.weights)
        if self.poses is not None:
            from fieldkit.distill.views import save_train_cameras

            save_train_cameras(self.run_dir, self.poses.train_cameras())
            atomic_write_bytes(self.run_dir / POSES_FILE, json.dumps(
                self.poses.report(self.scene.normalisation.scale), indent=1).encode())
        self._flush_log()
        plot_psnr(self.run_dir / "log.jsonl", self.run_dir / "psnr.png")

    def checkpoint_state(self) -> tuple[dict[str, Tensor], dict]:
        """Tensors and JSON the checkpoint carries besides the model and the optimizer."""
        return {"rng": rng_state(), **self.refiner_tensors()}, {"elapsed": self.elapsed,
                                                                "n_rays": self.n_rays}

    def refiner_tensors(self) -> dict[str, Tensor]:
        """The pose corrections' and appearance transforms' checkpoint tensors (none without
        ``--pose-opt`` and ``--appearance``)."""
        return {k: v for r in self.refiners() for k, v in r.state_tensors().items()}

    def restore_refiners(self, tensors: dict[str, Tensor]) -> None:
        for r in self.refiners():
            r.load_state_tensors(tensors)

    def resume(self) -> None:
        """Continue from the run's checkpoint exactly where it stopped."""
        step, model_state, optim_state, tensors, extra = load_checkpoint(self.run_dir)
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(optim_state)
        set_rng_state(tensors["rng"])
        self.step_count, self.elapsed = step, float(extra["elapsed"])
        self.n_rays = int(extra["n_rays"])
        self.restore_refiners(tensors)
        self.restore_state(tensors, extra)
        self._truncate_log(step)

    def restore_state(self, tensors: dict[str, Tensor], extra: dict) -> None:
        """Subclasses: take back what their ``checkpoint_state`` added (called by ``resume``)."""

    def _truncate_log(self, step: int) -> None:
        log = self.run_dir / "log.jsonl"
        if log.exists():  # drop lines written after the checkpoint
            keep = [ln for ln in log.read_text().splitlines() if ln and
                    json.loads(ln)["step"] <= step]
            atomic_write_bytes(log, ("\n".join(keep) + "\n" if keep else "").encode())

    def speed_text(self, stats: dict[str, float], rays_per_s: float) -> str:
        """The progress bar's speed column."""
        return f"{rays_per_s / 1000:.1f}k rays/s"

    def _log(self, record: dict) -> None:
        self._log_lines.append(json.dumps(record))

    def _flush_log(self) -> None:
        if not self._log_lines:
            return
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write("\n".join(self._log_lines) + "\n")
        self._log_lines.clear()

    # ------------------------------------------------------------------ the loop
    @property
    def _interrupted(self) -> bool:
        """Training was asked to stop: Ctrl-C (``fieldkit/train/interrupt.py``), or set."""
        return self._stop or interrupt.requested()

    @_interrupted.setter
    def _interrupted(self, value: bool) -> None:
        self._stop = bool(value)

    def done(self) -> bool:
        c = self.config
        return self.step_count >= c.step_budget or (c.max_time is not None
                                                    and self.elapsed >= c.max_time)

    def train(self) -> dict[str, float]:
        """Run until a budget is spent or Ctrl-C; always leaves a checkpoint. Returns the last
        step's stats plus ``interrupted``."""
        with interrupt.stop_on_ctrl_c():
            stats = self._train_loop()
            self._stop = self._interrupted  # the request ends with the context
        return {**stats, "interrupted": self._stop}

    def _train_loop(self) -> dict[str, float]:
        c = self.config
        last_save = start_elapsed = self.elapsed
        self.total_rays = 0
        stats: dict[str, float] = {}
        by_time = c.max_steps is None and c.max_time is not None
        total = int(c.max_time) if by_time else c.step_budget
        try:
            with make_progress(loss="", psnr="", speed="") as bar:
                task = bar.add_task("training", total=total, loss="", psnr="", speed="")
                while not self.done() and not self._interrupted:
                    stats = self.step()
                    self.total_rays += stats["rays"]
                    rays_per_s = self.total_rays / max(self.elapsed - start_elapsed, 1e-9)
                    bar.update(task, completed=int(self.elapsed) if by_time else self.step_count,
                               loss=f"loss {stats['loss']:.4f}", psnr=f"psnr {stats['psnr']:.2f}",
                               speed=self.speed_text(stats, rays_per_s))
                    if self.step_count % c.log_every == 0:
                        self._log({"step": self.step_count, "elapsed": round(self.elapsed, 3),
                                   **{k: round(v, 6) for k, v in stats.items()}})
                    if c.eval_every and self.step_count % c.eval_every == 0:
                        self._log({"step": self.step_count, "elapsed": round(self.elapsed, 3),
                                   "eval_psnr": round(self.evaluate(c.eval_views), 4)})
                    if self.elapsed - last_save >= c.checkpoint_every:
                        self.save()
                        last_save = self.elapsed
        finally:
            self.save()
        return stats
