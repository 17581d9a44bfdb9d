"""NerfModel: a radiance field, its occupancy grid and its ray marcher, behind the protocol
every fieldkit representation offers: ``render``, ``render_rays``, ``density``, ``save``/``load``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from fieldkit.data.cameras import Cameras
from fieldkit.encoders.hashgrid import HashGrid, HashGridConfig
from fieldkit.fields.radiance import DecoderConfig, RadianceField
from fieldkit.render.occupancy import OccupancyGrid
from fieldkit.render.volume import march, midpoints, render_rays
from fieldkit.train.checkpoint import load_tensors, save_tensors

MODEL_FILE = "model.safetensors"


@dataclass
class NerfConfig:
    """A volumetric model: encoder, decoders and how rays are marched through it."""

    encoder: HashGridConfig = field(default_factory=lambda: HashGridConfig(log2_table_size=17))
    """Multiresolution hash grid (2^17 entries per level: Adam's per-step cost on a CPU scales
    with the table size)."""
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    """Density and colour MLPs."""
    bound: float = 1.0
    """Half-size of the box the field covers, in box units (the scene bound)."""
    grid_resolution: int = 64
    """Occupancy-grid cells per side."""
    render_steps: int = 512
    """Marching steps along the box diagonal (step size = diagonal / render_steps)."""
    early_stop_eps: float = 1e-4
    """Stop a ray once its transmittance falls below this."""
    alpha_thre: float = 1e-3
    """Skip samples whose opacity is below this."""
    prune_in_training: bool = True
    """Run the density-only pass that applies early stop and alpha_thre during training too
    (always on when rendering without gradients)."""

    @property
    def step_size(self) -> float:
        return 2.0 * math.sqrt(3.0) * self.bound / self.render_steps

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> NerfConfig:
        return cls(encoder=HashGridConfig(**d["encoder"]), decoder=DecoderConfig(**d["decoder"]),
                   **{k: v for k, v in d.items() if k not in ("encoder", "decoder")})


class NerfModel(nn.Module):
    """Hash-grid NeRF with an occupancy grid (instant-ngp style), pure PyTorch."""

    kind = "hashgrid"

    def __init__(self, config: NerfConfig):
        super().__init__()
        self.config = config
        b = config.bound
        self.field = RadianceField(HashGrid(config.encoder), config.decoder, bound=b)
        self.register_buffer("aabb", torch.tensor([-b, -b, -b, b, b, b], dtype=torch.float32))
        self.grid = OccupancyGrid(self.aabb.clone(), resolution=config.grid_resolution)

    # ------------------------------------------------------------------ protocol
    def density(self, points: Tensor) -> Tensor:
        """[N, 3] box points -> [N] density."""
        return self.field.density(points)

    def update_grid(self, step: int) -> None:
        """Refresh the occupancy grid (acts every 16 steps; warm-up over the first 256)."""
        self.grid.update(step, lambda p: self.field.density(p) * self.config.step_size)

    def render_rays(self, origins: Tensor, dirs: Tensor, background: Tensor,
                    stratified: bool = False) -> dict[str, Tensor]:
        """Render rays [R, 3] (box coords, unit dirs) over ``background`` [3] or [R, 3].

        Returns rgb [R, 3], depth [R, 1], alpha [R, 1] and num_samples.
        """
        def sigma_fn(t0: Tensor, t1: Tensor, ray_idx: Tensor) -> Tensor:
            return self.field.density(midpoints(origins, dirs, t0, t1, ray_idx))

        def rgb_sigma_fn(t0: Tensor, t1: Tensor, ray_idx: Tensor) -> tuple[Tensor, Tensor]:
            return self.field(midpoints(origins, dirs, t0, t1, ray_idx), dirs[ray_idx])

        prune = self.config.prune_in_training or not torch.is_grad_enabled()
        samples = march(origins, dirs, self.grid, step_size=self.config.step_size, aabb=self.aabb,
                        sigma_fn=sigma_fn if prune else None, early_stop_eps=self.config.early_stop_eps,
                        alpha_thre=self.config.alpha_thre, stratified=stratified)
        return render_rays(rgb_sigma_fn, samples, len(origins), background)

    @torch.no_grad()
    def render(self, cameras: Cameras, background: Tensor, chunk: int = 8192) -> dict[str, Tensor]:
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

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Path) -> Path:
        """Write ``directory/model.safetensors`` (weights, occupancy grid, config metadata)."""
        path = Path(directory) / MODEL_FILE
        save_tensors(path, self.state_dict(), metadata={
            "kind": self.kind, "config": json.dumps(self.config.to_dict())})
        return path

    @classmethod
    def load(cls, directory: Path, device: str | torch.device = "cpu") -> NerfModel:
        """Rebuild a model from ``directory/model.safetensors`` (no pickling)."""
        from safetensors import safe_open

        path = Path(directory) / MODEL_FILE
        tensors = load_tensors(path, device=str(device))
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        model = cls(NerfConfig.from_dict(json.loads(meta["config"]))).to(device)
        model.load_state_dict(tensors)
        return model
