"""Which client gets which frame next, at what resolution, and how much time rendering may take.

Each connected browser has a ``ClientView``: its latest camera and settings, the frame being
rendered and the last frame shown. ``Renderer.work`` renders one strip for one client (round
robin) and sends finished frames. Adaptive resolution: while the camera moves the view is
rendered at ``preview_resolution`` (in one piece); once it has been still for
``settle_seconds`` the refined frame (``max_resolution``, or ``train_resolution`` while
training) is rendered strip by strip; partial frames are sent every ``PARTIAL_SECONDS``
over the previous one. A camera move drops an unfinished refined frame.

While training, ``RenderBudget`` limits the rendering to a fraction of the training time (a
token bucket that each optimiser step fills): the training thread renders strips between steps
only while it has credit, so training slows by about that fraction and no more.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from fieldkit.viewer.camera import ViewCamera, view_to_cameras
from fieldkit.viewer.config import ViewerConfig
from fieldkit.viewer.frame import FrameJob, FrameSettings

PARTIAL_SECONDS = 0.5
"""Send the strips of an unfinished refined frame this often."""
STRIP_SECONDS_LIVE = 0.3
"""Target time of one strip while training (the granularity of the budget). Not smaller: a
volumetric render call costs about the same for few rays as for many (the front-to-back
rounds follow the longest ray), and the bucket pays back any overshoot anyway."""
STRIP_SECONDS_IDLE = 0.2
"""Target time of one strip otherwise (how soon a camera move is noticed)."""


class RenderBudget:
    """Token bucket: rendering earns ``fraction`` of every second of training (``earn``, called
    with each optimiser step's duration) and spends what it takes (``charge``). Idle credit is
    capped at ``burst`` seconds; an overdraft (a strip that ran long) is paid back by the next
    steps. Earning on training time rather than wall time makes the slowdown the fraction
    itself (0.15: +15%), whatever else the machine is doing."""

    def __init__(self, fraction: float, burst: float = 0.2):
        self.fraction, self.burst = fraction, burst
        self.earned = 0.0
        self.spent = 0.0
        self.total = 0.0
        """Seconds charged so far (for the report)."""

    def earn(self, seconds: float) -> None:
        """Credit ``fraction * seconds`` for ``seconds`` of training."""
        self.earned += self.fraction * max(seconds, 0.0)
        if self.earned - self.spent > self.burst:
            self.spent = self.earned - self.burst

    def available(self) -> float:
        """Seconds of rendering allowed now (may be negative: in debt)."""
        return self.earned - self.spent

    def charge(self, seconds: float) -> None:
        self.spent += seconds
        self.total += seconds


@dataclass
class ClientView:
    """Render state of one browser."""

    client_id: int
    send: Callable[[np.ndarray, np.ndarray | None], None]
    """Shows a [H, W, 3] uint8 frame in this browser, with its view depth [H, W, 1] (or
    None): ``FrameJob.view_depth``."""
    settings: FrameSettings = field(default_factory=FrameSettings)
    view: ViewCamera | None = None
    moved_at: float = 0.0
    version: int = 0
    """Bumped by every camera or settings change."""
    max_resolution: int = 512
    preview_resolution: int = 128
    server_render: bool = True
    """False while the browser draws the scene itself (splats in the browser, rgb)."""
    job: FrameJob | None = None
    shown_key: tuple | None = None
    shown_at: float = 0.0
    shown_model: int = -1
    shown_image: np.ndarray | None = None
    shown_depth: np.ndarray | None = None
    last_partial: float = 0.0
    pixels_per_second: dict = field(default_factory=dict)
    """Measured render throughput per step scale (sizes the strips; see ``rate``)."""
    frames_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set_camera(self, view: ViewCamera) -> None:
        with self.lock:
            if view != self.view:
                self.view, self.moved_at = view, time.monotonic()
                self.version += 1

    def update_settings(self, **changes) -> None:
        with self.lock:
            self.settings = replace(self.settings, **changes)
            self.version += 1

    def rate(self, step_scale: float) -> float:
        """Pixels per second expected at ``step_scale`` (cost goes with the samples per ray,
        so another scale's measurement is scaled). Before any measurement 2k px/s: the first
        strip is a few rows (an untrained model can cost 1 ms per pixel), then it adapts."""
        if step_scale in self.pixels_per_second:
            return self.pixels_per_second[step_scale]
        for scale, pps in self.pixels_per_second.items():
            return pps * step_scale / scale
        return 2000.0

    def measured(self, step_scale: float, pixels: int, seconds: float) -> None:
        """Fold one strip's speed into the estimate: a slower strip is believed at once (the
        model just got denser, or the strip reached the object), a faster one gradually and
        by at most 1.5x per strip (rows of empty space render 30x faster than rows through
        the object, and one over-sized strip would blow the time target)."""
        new = pixels / max(seconds, 1e-4)
        old = self.rate(step_scale)
        self.pixels_per_second[step_scale] = new if new < old else min(
            0.7 * old + 0.3 * new, 1.5 * old)

    def frame_done(self, step_scale: float, pixels: int, seconds: float) -> None:
        """A refined frame finished: its average speed bounds the next frame's first strips
        (the last strips, often empty space, overstate it)."""
        if seconds > 0:
            avg = pixels / seconds
            self.pixels_per_second[step_scale] = min(self.rate(step_scale), avg)

    def touch(self) -> None:
        """Re-render (e.g. resolution or render mode changed)."""
        with self.lock:
            self.version += 1


class Renderer:
    """Renders frames for every ``ClientView`` from ``sources``."""

    def __init__(self, sources: list, config: ViewerConfig):
        self.sources, self.config = sources, config
        self.views: dict[int, ClientView] = {}
        self.lock = threading.Lock()
        self._next = 0
        self.training = False
        """True while a live trainer is stepping (refined frames use train_resolution)."""
        self.wake = threading.Event()

    def add(self, view: ClientView) -> None:
        with self.lock:
            self.views[view.client_id] = view
        self.wake.set()

    def remove(self, client_id: int) -> None:
        with self.lock:
            self.views.pop(client_id, None)

    def model_version(self) -> int:
        return sum(s.version for s in self.sources)

    # ------------------------------------------------------------------ planning
    def _plan(self, v: ClientView, now: float, live: bool) -> tuple | None:
        """(key, resolution) of the frame ``v`` needs now, or None."""
        if v.view is None or not v.server_render:
            return None
        moving = now - v.moved_at < self.config.settle_seconds
        if moving or v.shown_key is None:   # nothing on screen yet: a quick preview first
            res = min(v.preview_resolution, v.max_resolution)
        elif self.training:
            res = min(self.config.train_resolution, v.max_resolution)
        else:
            res = v.max_resolution
        key = (v.version, res)
        if v.job is not None and (v.job.key == key or (
                live and moving and v.job.key[1] == res and v.job.fraction > 0)):
            # while training, a preview under way is finished even when the camera moved on:
            # restarting it at every move would never show a frame
            return v.job.key, res
        if v.shown_key == key or (moving and v.shown_key and v.shown_key[0] == v.version):
            stale = v.shown_model != self.model_version()
            if not (stale and now - v.shown_at >= self.config.live_refresh_seconds):
                return None
            if v.job is not None and v.job.key[0] == v.version:
                return v.job.key, v.job.key[1]     # a refresh is under way: finish it
        return key, res

    def _pick(self, live: bool) -> tuple[ClientView, tuple] | None:
        now = time.monotonic()
        with self.lock:
            views = list(self.views.values())
        for k in range(len(views)):
            v = views[(self._next + k) % len(views)]
            with v.lock:
                plan = self._plan(v, now, live)
            if plan is not None:
                self._next = (self._next + k + 1) % max(len(views), 1)
                return v, plan
        return None

    # ------------------------------------------------------------------ rendering
    def work(self, live: bool = False) -> float:
        """Render one strip for the next client that needs one; returns the seconds spent
        (0.0: nothing to do)."""
        picked = self._pick(live)
        if picked is None:
            return 0.0
        v, (key, res) = picked
        t0 = time.perf_counter()
        with v.lock:
            if v.job is None or v.job.key != key:
                camera = view_to_cameras(v.view, res)
                moving = time.monotonic() - v.moved_at < self.config.settle_seconds
                preview = (moving or v.shown_key is None) and res < v.max_resolution
                settings = v.settings
                if preview:   # coarser steps, in one piece
                    settings = replace(settings, step_scale=self.config.preview_step_scale)
                v.job = FrameJob(self.sources, camera, settings, key, None if preview else 0)
                v.job.model = self.model_version()
            job = v.job
            scale = job.settings.step_scale
            if job.strip_pixels is not None:   # refined frames: strips sized to a time target
                target = STRIP_SECONDS_LIVE if live else STRIP_SECONDS_IDLE
                job.strip_pixels = max(1, int(v.rate(scale) * target))
        dt = job.run_piece()
        if job.strip_pixels is not None:
            v.measured(scale, job.last_pixels, dt)
            if job.done:
                v.frame_done(scale, job.width * job.height * len(job.parts), job.seconds)
        now = time.monotonic()
        if job.done:
            self._show(v, job.image(), job, now)
        elif (not live and now - v.last_partial >= PARTIAL_SECONDS and v.shown_image is not None
              and v.server_render):
            v.last_partial = now
            self._send(v, job.partial_image(v.shown_image), job.view_depth(v.shown_depth))
        return time.perf_counter() - t0

    def _show(self, v: ClientView, img: np.ndarray, job: FrameJob, now: float) -> None:
        with v.lock:
            if v.job is job:
                v.job = None
            if not v.server_render:
                # begun before the browser took over drawing: sent now, this frame and its
                # depth would cover the browser's splats
                return
            v.shown_key, v.shown_at, v.shown_model = job.key, now, job.model
            v.shown_image = img
            v.shown_depth = depth = job.view_depth()
            v.last_partial = now
        self._send(v, img, depth)

    def _send(self, v: ClientView, img: np.ndarray, depth: np.ndarray | None) -> None:
        try:
            v.send(img, depth)
            v.frames_sent += 1
        except Exception:  # the browser went away mid-send
            self.remove(v.client_id)

    def run_budgeted(self, budget: RenderBudget) -> float:
        """Render strips while the budget has credit (between training steps)."""
        spent = 0.0
        while budget.available() > 0:
            dt = self.work(live=True)
            if dt == 0.0:
                break
            budget.charge(dt)
            spent += dt
        return spent

    def loop(self, stop: threading.Event) -> None:
        """The render thread of a viewer without training: render whenever there is work."""
        while not stop.is_set():
            if self.work(live=False) == 0.0:
                self.wake.wait(0.02)
                self.wake.clear()
