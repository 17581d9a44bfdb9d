"""Training with the viewer attached (``fieldkit train SCENE --viewer``, ``fieldkit distill
TEACHER --to KIND --viewer``).

The viewer and the trainer meet at ``trainer.step()`` and the model's ``render``: the
trainer's own loop (``Trainer.train``: budgets, progress bar, log, eval, checkpoints, Ctrl-C)
runs unchanged in the main thread, and ``LiveTraining`` wraps ``trainer.step`` so that before
each step it

- runs what browsers queued for a step boundary (snapshots for videos, saves for exports),
- waits while the user has paused training (rendering at full speed meanwhile),
- renders strips for the browsers while the ``RenderBudget`` has credit (which each step
  earns: ``render_fraction`` of the training time, 15% by default), and
- refreshes the stats panel and the Gaussians drawn by the browser now and then.

Rendering therefore never races the optimiser, and the trainer's ``elapsed`` (which counts
only the steps) is unchanged: the viewer's cost shows as wall time, which
``apps/bench_viewer.py`` measures.
"""
from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

from fieldkit.viewer.config import ViewerConfig
from fieldkit.viewer.scheduler import RenderBudget


class LiveTraining:
    """Hooks a Trainer's ``step`` to a Viewer (see module docstring)."""

    def __init__(self, trainer, config: ViewerConfig, sources: list | None = None):
        """``sources``: what the viewer shows, the trainer's model first (default: that model
        alone, ``Source.from_trainer``)."""
        from fieldkit.viewer.server import Viewer
        from fieldkit.viewer.sources import Source

        self.trainer, self.config = trainer, config
        self.paused = False
        self.finished = False
        self.started = False
        self.step_lock = threading.Lock()
        """Held by the training thread during each step."""
        self.budget = RenderBudget(config.render_fraction)
        self.tasks: queue.Queue = queue.Queue()
        self.stats: dict = {}
        self.rays = 0
        self.t0 = time.perf_counter()
        self.p0 = trainer.progress()
        self.elapsed0 = trainer.elapsed
        self._last_stats = 0.0
        self._last_splats = time.perf_counter()
        self.viewer = Viewer(sources or [Source.from_trainer(trainer)], config, live=self)
        self.viewer.renderer.training = True
        self._step = trainer.step
        trainer.step = self._hooked_step

    # ------------------------------------------------------------------ the hook
    def _hooked_step(self) -> dict:
        self.between_steps()
        with self.step_lock:
            self.started = True
            t0 = time.perf_counter()
            stats = self._step()
            self.budget.earn(time.perf_counter() - t0)
        self.stats = stats
        self.rays += int(stats.get("rays", 0))
        return stats

    def _run_tasks(self) -> None:
        while True:
            try:
                fn, box, done = self.tasks.get_nowait()
            except queue.Empty:
                return
            try:
                box.append(fn())
            except BaseException as e:  # handed to the waiting thread
                box.append(e)
            done.set()

    def between_steps(self) -> None:
        self._run_tasks()
        renderer = self.viewer.renderer
        while self.paused and not getattr(self.trainer, "_interrupted", False):
            renderer.training = False
            self._run_tasks()
            self._periodic(force=False)
            if renderer.work(live=False) == 0.0:
                time.sleep(0.02)
        renderer.training = True
        self.budget.fraction = self.config.render_fraction
        renderer.run_budgeted(self.budget)
        self._periodic(force=False)

    def _periodic(self, force: bool) -> None:
        now = time.perf_counter()
        if force or now - self._last_stats >= self.config.stats_seconds:
            self._last_stats = now
            text = self.stats_text()
            for session in list(self.viewer.sessions.values()):
                md = session.handles.get("train_stats")
                if md is not None:
                    md.content = text
        if (self.viewer.sources[0].is_splat
                and now - self._last_splats >= self.config.splat_refresh_seconds):
            t = time.perf_counter()
            for session in list(self.viewer.sessions.values()):
                if session.splat_node is not None:
                    session.refresh_render_mode()
            self._last_splats = time.perf_counter()
            self.budget.charge(self._last_splats - t)

    def call_between_steps(self, fn, timeout: float = 600.0):
        """Run ``fn`` on the training thread at the next step boundary and return its result
        (directly when training is over)."""
        if threading.current_thread() is threading.main_thread():
            return fn()
        with self.step_lock:
            if not self.started or self.finished:  # no step runs now, nor can start
                return fn()
        box: list = []
        done = threading.Event()
        self.tasks.put((fn, box, done))
        while not done.wait(0.1):
            if self.finished:
                self._run_tasks()
            timeout -= 0.1
            if timeout <= 0:
                raise TimeoutError("the training thread did not reach a step boundary")
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    # ------------------------------------------------------------------ stats
    def snapshot_stats(self) -> dict:
        t = self.trainer
        wall = time.perf_counter() - self.t0
        train_time = max(t.elapsed - self.elapsed0, 1e-9)
        p = t.progress()
        eta = wall * (1 - p) / (p - self.p0) if p > self.p0 and not self.finished else 0.0
        return {"step": t.step_count, "loss": self.stats.get("loss"),
                "psnr": self.stats.get("psnr"), "rays_per_s": self.rays / train_time,
                "eta": eta, "progress": p, "render_share": self.budget.total / max(wall, 1e-9)}

    def stats_text(self) -> str:
        s = self.snapshot_stats()
        state = "finished" if self.finished else ("paused" if self.paused else "training")
        loss = f"{s['loss']:.4f}" if s["loss"] is not None else "-"
        psnr = f"{s['psnr']:.2f} dB" if s["psnr"] is not None else "-"
        speed = (f"{self.trainer.model.num_gaussians:,} Gaussians"
                 if self.viewer.sources[0].is_splat else f"{s['rays_per_s'] / 1000:.1f}k rays/s")
        return (f"**{state}** step {s['step']:,} ({100 * s['progress']:.0f}%)  \n"
                f"loss {loss}, PSNR {psnr}  \n{speed}, ETA {s['eta']:.0f} s  \n"
                f"viewer rendering {100 * s['render_share']:.0f}% of the time")

    def build_panel(self, session) -> None:
        from fieldkit.viewer.panel_train import build_train_panel

        build_train_panel(session, self)

    def finish(self) -> None:
        """Training is over: the viewer goes on rendering in its own thread."""
        self.finished = True
        self.paused = False
        self.viewer.renderer.training = False
        self._run_tasks()
        self._periodic(force=True)
        self.viewer.start_render_thread()


def train_with_viewer(scene_path: Path, kind: str, run_dir: Path | None, train_config,
                      viewer_config: ViewerConfig, keep_open: bool = True, **prepare_kwargs):
    """``fieldkit.train.run.train`` with the viewer: returns (TrainResult, LiveTraining).
    With ``keep_open`` the caller keeps the viewer (``live.viewer.stop()`` ends it)."""
    from fieldkit.train.run import TrainResult, prepare

    from fieldkit.train.interrupt import stop_on_ctrl_c

    with stop_on_ctrl_c():  # a Ctrl-C during set-up stops training at step 0
        trainer = prepare(scene_path, kind, run_dir, train_config, **prepare_kwargs)
        live = LiveTraining(trainer, viewer_config)
        live.viewer.print_url()
        try:
            stats = trainer.train()
        finally:
            live.finish()
            if not keep_open:
                live.viewer.stop()
    result = TrainResult(trainer.run_dir, trainer.step_count, trainer.elapsed,
                         bool(stats["interrupted"]))
    return result, live


def distill_with_viewer(viewer_config: ViewerConfig, keep_open: bool = True, quiet: bool = False,
                        **distill_kwargs):
    """``fieldkit.distill.run.distill`` with the viewer, the student beside its teacher
    (``Source.from_distillation``): returns (report, LiveTraining). With ``keep_open`` the
    caller keeps the viewer (``live.viewer.stop()`` ends it)."""
    from fieldkit.distill.run import Distillation
    from fieldkit.train.interrupt import stop_on_ctrl_c
    from fieldkit.viewer.sources import Source

    with stop_on_ctrl_c():  # Ctrl-C during set-up: fieldkit/train/interrupt.py
        job = Distillation(**distill_kwargs)
        live = LiveTraining(job.trainer, viewer_config, Source.from_distillation(job))
        live.viewer.print_url()
        try:
            stats = job.trainer.train()
        finally:
            live.finish()
            if not keep_open:
                live.viewer.stop()
    return job.report(stats, quiet=quiet), live
