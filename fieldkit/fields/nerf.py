"""VolumeModel: a radiance field, its occupancy grid and its ray marcher, behind the protocol every
fieldkit representation offers (``render``, ``render_rays``, ``density``, ``save``/``load``,
``num_params``, ``describe``).

The concrete models (hash grid, tri-plane, MLP: ``fieldkit/fields/models.py``) differ only in the
encoder they hand to ``RadianceField``; marching, compositing and persistence live here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from fieldkit.data.cameras import Cameras
from fieldkit.fields.radiance import RadianceField
from fieldkit.fields.registry import load_model_dir, save_model
from fieldkit.render.backends import choose_volume_backend
from fieldkit.render.composite import segment_first
from fieldkit.render.cone import march_cone
from fieldkit.render.occupancy import OccupancyGrid
from fieldkit.render.volume import march, midpoints, render_rays
from fieldkit.render.volume_nerfacc import march_nerfacc, render_rays_nerfacc

INFER_CHUNK = 1 << 18
"""Samples per field evaluation when rendering without gradients (bounds the memory)."""
INFER_ROUND = 16
"""Samples per ray evaluated per round when rendering without gradients (front to back)."""


@dataclass
class RenderConfig:
    """How rays are marched through a volumetric model."""

    bound: float = 1.0
    """Half-size of the box the field covers, in box units (set from the scene's bound)."""
    grid_resolution: int = 64
    """Occupancy-grid cells per side."""
    render_steps: int = 512
    """Marching steps along the diagonal of the finest grid level (the whole box with one
    level): the smallest step is that diagonal / render_steps."""
    cascades: int = 1
    """Occupancy-grid levels, each twice the size of the last; the finest covers the box shrunk
    2^(cascades - 1) times. More than one marches with ``march_cone`` (torch on every device)."""
    cone_angle: float = 0.0
    """Steps grow as t * cone_angle (between the smallest step and the coarsest grid cell); 0:
    uniform steps."""
    unbounded: bool = True
    """For a scene whose bound is > 1 (a real capture whose background fills a box larger than
    its region of interest [-1, 1]^3), give a fresh model a cone angle of 1/32 (uniform steps up
    to 32 steps from the camera, then growing). At 150 s, 1/8 size: fox 21.88 -> 23.51 dB with
    views 2.5x faster, beer-colmap the same PSNR (23.13 dB) with views about 2x faster; 1/16,
    1/64 and 1/128 did worse, and instant-ngp's cascades with 1/256 from the finest level lost
    1.4 dB on beer (apps/results/cone_cpu/bench.md). Set ``cascades``/``cone_angle`` to choose
    otherwise."""
    early_stop_eps: float = 1e-4
    """Stop a ray once its transmittance falls below this."""
    alpha_thre: float = 1e-3
    """Skip samples whose opacity is below this."""
    prune_in_training: bool = True
    """Run a density-only pass that applies early stop and alpha_thre before the training pass
    (rendering without gradients evaluates the field once on every occupied sample instead)."""
    backend: str = "auto"
    """auto: nerfacc on CUDA when its kernels build and run, else the pure-torch marcher (one
    warning when a CUDA build fails); cuda (or nerfacc): require it; torch: always the twin.
    Cone stepping and cascades always use the torch marcher (on any device)."""

    @property
    def finest_bound(self) -> float:
        """Half-size of the finest grid level."""
        return self.bound / 2 ** (self.cascades - 1)

    @property
    def step_size(self) -> float:
        return 2.0 * math.sqrt(3.0) * self.finest_bound / self.render_steps

    @property
    def max_step(self) -> float:
        """The largest cone step: a cell of the coarsest grid level."""
        return max(2.0 * self.bound / self.grid_resolution, self.step_size)

    @property
    def cone_marching(self) -> bool:
        """Whether rays are marched with ``march_cone`` (cascades or a cone angle)."""
        return self.cascades > 1 or self.cone_angle > 0


UNBOUNDED_CONE_ANGLE = 1 / 32
"""Cone angle of a fresh model of an unbounded scene (see ``RenderConfig.unbounded``)."""


def unbounded_render(render: RenderConfig) -> RenderConfig:
    """``render`` with cone stepping when its scene is unbounded (see ``RenderConfig.unbounded``);
    unchanged when cascades or a cone angle are set already."""
    if not render.unbounded or render.bound <= 1 or render.cone_marching:
        return render
    return replace(render, cone_angle=UNBOUNDED_CONE_ANGLE)


class VolumeModel(nn.Module):
    """Field + occupancy grid + marcher (pure PyTorch, or nerfacc on CUDA). Subclasses set
    ``kind``, ``config_class`` and ``make_encoder``; ``config`` must have ``encoder``,
    ``decoder`` and ``render`` fields."""

    kind: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    default_lr: ClassVar[float] = 1e-2
    """Adam's peak learning rate for this model when the training config leaves it unset."""
    default_pose_start: ClassVar[float] = 0.0
    """``--pose-opt``'s start (``TrainConfig.pose_start``) when the config leaves it unset: a
    hash grid (and the MLP, not measured) refines its cameras from the first step (on the demo
    scene with turned poses, 25.76 dB from the start against 23.60 from a quarter of 600
    steps; exact poses 26.17 against 26.93, 27.37 without: apps/results/pose_opt_cpu)."""
    default_target_samples: ClassVar[int] = 1 << 14
    """Samples per training step (``TrainConfig.target_samples``) when the config leaves it
    unset."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        b = config.render.bound
        self.field = RadianceField(self.make_encoder(config), config.decoder, bound=b)
        self.register_buffer("aabb", torch.tensor([-b, -b, -b, b, b, b], dtype=torch.float32))
        fb = config.render.finest_bound
        self.grid = OccupancyGrid([-fb, -fb, -fb, fb, fb, fb],
                                  resolution=config.render.grid_resolution,
                                  levels=config.render.cascades)

    @staticmethod
    def make_encoder(config) -> nn.Module:
        """The position encoder (x [N, 3] in [0, 1] -> [N, out_dim]) for ``config.encoder``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ protocol
    def density(self, points: Tensor) -> Tensor:
        """[N, 3] box points -> [N] density."""
        return self.field.density(points)

    def update_grid(self, step: int, warmup_steps: int = 256) -> None:
        """Refresh the occupancy grid (acts every 16 steps; every cell is evaluated during the
        first ``warmup_steps``, a sample of them afterwards)."""
        step_size = self.config.render.step_size
        self.grid.update(step, lambda p: self.field.density(p) * step_size,
                         warmup_steps=warmup_steps)

    def render_rays(self, origins: Tensor, dirs: Tensor, background: Tensor,
                    stratified: bool = False) -> dict[str, Tensor]:
        """Render rays [R, 3] (box coords, unit dirs) over ``background`` [3] or [R, 3], with
        the volume backend ``render.backend`` selects for their device.

        Returns rgb [R, 3], depth [R, 1], alpha [R, 1] and num_samples.
        """
        rc = self.config.render
        if not rc.cone_marching and \
                choose_volume_backend(rc.backend, origins.device) == "nerfacc":
            return self._render_rays_nerfacc(origins, dirs, background, stratified)

        def sigma_fn(t0: Tensor, t1: Tensor, ray_idx: Tensor) -> Tensor:
            return self.field.density(midpoints(origins, dirs, t0, t1, ray_idx))

        def rgb_sigma_fn(t0: Tensor, t1: Tensor, ray_idx: Tensor) -> tuple[Tensor, Tensor]:
            if torch.is_grad_enabled():
                return self.field(midpoints(origins, dirs, t0, t1, ray_idx), dirs[ray_idx])
            return self._infer_front_to_back(origins, dirs, t0, t1, ray_idx)

        # Training: an optional density-only pre-pass drops samples past early stop / below
        # alpha_thre before the (costly) pass with gradients. Without gradients the field is
        # evaluated once per sample, front to back in rounds, skipping rays that have already
        # stopped (``_infer_front_to_back``): samples below alpha_thre or past early stop get
        # zero density, the same composite as dropping them.
        prune = rc.prune_in_training and torch.is_grad_enabled()
        kw = dict(step_size=rc.step_size, aabb=self.aabb, sigma_fn=sigma_fn if prune else None,
                  early_stop_eps=rc.early_stop_eps, alpha_thre=rc.alpha_thre,
                  stratified=stratified)
        if rc.cone_marching:
            samples = march_cone(origins, dirs, self.grid, cone_angle=rc.cone_angle,
                                 max_step=rc.max_step, **kw)
        else:
            samples = march(origins, dirs, self.grid, **kw)
        return render_rays(rgb_sigma_fn, samples, len(origins), background)

    def _render_rays_nerfacc(self, origins: Tensor, dirs: Tensor, background: Tensor,
                             stratified: bool) -> dict[str, Tensor]:
        """``render_rays`` through nerfacc's marcher and compositor (CUDA).

        With gradients it is the torch path with nerfacc's kernels (same samples, an optional
        density pre-pass). Without gradients it does not use ``_infer_front_to_back`` (rounds
        with a host sync each): the density pre-pass always runs (early stop, alpha_thre) and
        the field is evaluated once on the surviving samples, in chunks of INFER_CHUNK, as
        nerfacc's own examples render. The pre-pass measures transmittance with the faint
        samples it then drops, so a ray may stop a sample or so earlier than the torch path's
        inference: images differ by about early_stop_eps.
        """
        rc, grad = self.config.render, torch.is_grad_enabled()

        def sigma_fn(t0: Tensor, t1: Tensor, ray_idx: Tensor) -> Tensor:
            return self.field.density(midpoints(origins, dirs, t0, t1, ray_idx))

        def rgb_sigma_fn(t0: Tensor, t1: Tensor, ray_idx: Tensor) -> tuple[Tensor, Tensor]:
            if grad:
                return self.field(midpoints(origins, dirs, t0, t1, ray_idx), dirs[ray_idx])
            parts = [self.field(midpoints(origins, dirs, a, b, r), dirs[r]) for a, b, r in
                     zip(t0.split(INFER_CHUNK), t1.split(INFER_CHUNK), ray_idx.split(INFER_CHUNK))]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

        prune = rc.prune_in_training or not grad
        samples = march_nerfacc(origins, dirs, self.grid, step_size=rc.step_size, aabb=self.aabb,
                                sigma_fn=sigma_fn if prune else None,
                                early_stop_eps=rc.early_stop_eps, alpha_thre=rc.alpha_thre,
                                stratified=stratified)
        return render_rays_nerfacc(rgb_sigma_fn, samples, len(origins), background)

    @torch.no_grad()
    def _infer_front_to_back(self, origins: Tensor, dirs: Tensor, t0: Tensor, t1: Tensor,
                             ray_idx: Tensor) -> tuple[Tensor, Tensor]:
        """rgb [S, 3], sigma [S] of packed samples without gradients, evaluated in rounds of
        INFER_ROUND samples per ray from front to back: a ray whose transmittance has fallen
        below early_stop_eps is not evaluated further (its later samples get zero density, as
        the training pre-pass drops them). Samples below alpha_thre get zero density too."""
        rc = self.config.render
        n = len(t0)
        rgb, sigma = t0.new_zeros(n, 3), t0.new_zeros(n)
        rank = torch.arange(n, device=t0.device) - segment_first(ray_idx, len(origins))
        order = torch.argsort(rank, stable=True)
        bounds = torch.searchsorted(rank[order], torch.arange(
            0, int(rank.max()) + INFER_ROUND + 1, INFER_ROUND, device=t0.device)).tolist()
        log_t = torch.zeros(len(origins), dtype=torch.float64, device=t0.device)
        stop, dt = math.log(rc.early_stop_eps), t1 - t0
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            sel = order[lo:hi]
            sel = sel[log_t[ray_idx[sel]] > stop]
            for part in sel.split(INFER_CHUNK):
                r = ray_idx[part]
                rgb[part], sigma[part] = self.field(
                    midpoints(origins, dirs, t0[part], t1[part], r), dirs[r])
            if rc.alpha_thre > 0:  # as the training pre-pass: faint samples do not composite
                faint = 1 - torch.exp(-sigma[sel] * dt[sel]) < rc.alpha_thre
                sigma[sel[faint]] = 0.0
            log_t.index_add_(0, ray_idx[sel], (-sigma[sel] * dt[sel]).double())
        return rgb, sigma

    @torch.no_grad()
    def render(self, cameras: Cameras, background: Tensor, chunk: int = 16384
               ) -> dict[str, Tensor]:
        """Render every pixel of the first camera: rgb [H, W, 3], depth [H, W, 1],
        alpha [H, W, 1]."""
        origins, dirs = cameras.image_rays(0)
        h, w = origins.shape[:2]
        origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)
        out: dict[str, list[Tensor]] = {"rgb": [], "depth": [], "alpha": []}
        for i in range(0, len(origins), chunk):
            res = self.render_rays(origins[i:i + chunk], dirs[i:i + chunk], background)
            for k in out:
                out[k].append(res[k])
        return {k: torch.cat(v).reshape(h, w, -1) for k, v in out.items()}

    # ------------------------------------------------------------------ training hooks
    def param_groups(self, lr: float) -> list[dict]:
        """Optimiser groups (encoder without weight decay, decoders with a little)."""
        return self.field.param_groups(lr)

    def regularization(self) -> Tensor | None:
        """Extra loss term added at every training step (None: nothing)."""
        return None

    # ------------------------------------------------------------------ description
    @property
    def num_params(self) -> int:
        """Trainable parameters (the occupancy grid is not counted)."""
        return sum(p.numel() for p in self.parameters())

    def describe(self) -> str:
        """A few readable lines: kind, parameter counts by part, encoder and renderer settings."""
        enc, f = self.field.encoder, self.field
        n_enc = sum(p.numel() for p in enc.parameters())
        n_dec = self.num_params - n_enc
        rc = self.config.render
        return "\n".join([
            f"{self.kind} model: {self.num_params:,} parameters "
            f"({n_enc:,} encoder, {n_dec:,} decoders), {self.num_params * 4 / 2**20:.1f} MiB "
            "as float32",
            f"  encoder   {type(enc).__name__}({enc.extra_repr()}) -> {enc.out_dim} features",
            f"  decoders  density {_layers(f.density_net)}; colour {_layers(f.color_net)}",
            f"  renderer  bound {rc.bound:g}, occupancy grid {rc.grid_resolution}^3"
            + (f" x {rc.cascades} levels" if rc.cascades > 1 else "")
            + f", step {rc.step_size:.4f} ({rc.render_steps} per diagonal"
            + (" of the finest level" if rc.cascades > 1 else "")
            + (f", growing by 1/{1 / rc.cone_angle:.0f} of t up to {rc.max_step:.3f})"
               if rc.cone_angle > 0 else ")"),
        ])

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Path, weights: str = "float32") -> Path:
        """Write ``directory/model.safetensors`` (weights as ``weights``: float32 or float16,
        occupancy grid, config metadata)."""
        return save_model(self, directory, weights)

    @classmethod
    def load(cls, directory: Path, device: str | torch.device = "cpu") -> VolumeModel:
        """Rebuild a model from ``directory/model.safetensors`` alone (no pickling)."""
        return load_model_dir(cls, directory, device)


def _layers(net: nn.Sequential) -> str:
    dims = [m.in_features for m in net if isinstance(m, nn.Linear)] + [net[-1].out_features]
    return " -> ".join(str(d) for d in dims)
