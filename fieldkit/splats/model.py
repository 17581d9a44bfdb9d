"""SplatModel: 3D Gaussians behind the representation protocol (render, density, save/load).

Parameters live in box coordinates (like every fieldkit model) in an ``nn.ParameterDict``:
means [N, 3], scales [N, 3] (log standard deviations), quats [N, 4] (w, x, y, z), opacities
[N] (logits), sh0 [N, 1, 3] and shN [N, K-1, 3] (spherical harmonics up to ``sh_degree``, the
3DGS convention: colour = 0.5 + sum_k sh_k Y_k(view direction), clamped at 0). N changes during
training; ``load_state_dict`` resizes the model to the incoming tensors.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from fieldkit.data.cameras import Cameras
from fieldkit.encoders.sh import C0, sh_encode
from fieldkit.errors import FieldkitError
from fieldkit.fields.registry import load_model_dir, register, save_model
from fieldkit.render.backends import choose_splat_backend
from fieldkit.render.splat import rasterize
from fieldkit.render.splat_cpu import use_cpu_blend
from fieldkit.splats.densify import DensifyConfig
from fieldkit.splats.mixture import mixture_density

KEYS = ("means", "scales", "quats", "opacities", "sh0", "shN")


@dataclass
class SplatRenderConfig:
    """How the Gaussians are rasterized."""

    bound: float = 1.0
    """Half-size of the scene box in box units (set from the scene)."""
    near: float = 0.01
    """Gaussians closer to the camera than this (box units) are culled."""
    eps2d: float = 0.3
    """Low-pass filter added to every projected covariance, in pixels^2 (3DGS)."""
    tile_size: int = 16
    """Tile side in pixels for binning."""
    antialiased: bool = False
    """gsplat's antialiased mode (Mip-Splatting's 2D filter): each Gaussian's opacity is scaled
    so that the ``eps2d`` low-pass keeps its total weight. Splats trained this way (gsplat's
    --antialiased, splatfacto's rasterize_mode antialiased, a .spz flagged so) must be drawn
    this way; others not."""
    backend: str = "auto"
    """auto (gsplat's CUDA kernels on a GPU when they build; on the CPU, float32 Gaussians
    blend with compiled C++ loops when they build, ``fieldkit/render/splat_cpu.py``; else the
    pure-torch twin), cuda, or torch (the pure-torch twin, the reference)."""


@dataclass
class SplatConfig:
    """3D Gaussian splatting (Kerbl et al. 2023) with fieldkit's rasterizer."""

    sh_degree: int = 3
    """Highest spherical-harmonics degree of the colours (0..3)."""
    sh_interval: float = 1000
    """Raise the active SH degree by one every this many steps of the 30k-step reference
    schedule (scaled to the run's budget)."""
    init_points: int = 20000
    """Gaussians drawn at random (see ``init_region``) when the scene has no sparse points (a
    distilled splat student: points of the teacher's surface, 50000 by default)."""
    init_region: Literal["frustum", "roi"] = "frustum"
    """Where those random Gaussians start: ``frustum``, on the rays of random pixels of the
    training photos inside the scene box, with the pixels' colours (``fieldkit/splats/init.py``);
    ``roi``, uniform in the region of interest [-1, 1]^3 with random colours. At 300 s: fox
    23.80 dB with frustum against 16.68 with roi, lego 28.23 against 28.44
    (apps/results/splat_init_cpu/bench.md)."""
    init_opacity: float = 0.1
    """Opacity of new Gaussians."""
    init_scale: float = 0.5
    """Multiplier of the initial scale (mean distance to the 3 nearest neighbours). Half of
    3DGS's: the CPU rasterizer's cost follows the pixels the Gaussians cover, and 1.0 made the
    first steps on lego at 200x200 8x slower (6.2 vs 0.8 s)."""
    step_pixels: int = 1 << 16
    """Most pixels a training step draws (0: no limit). A larger view trains on a random
    window of about this many pixels, of its shape, a new one every step (gsplat's
    --patch-size): a step's cost follows its pixels, and a short run needs steps more than
    whole views. In 300 s from the photos: fox at 270x480 20.60 dB (310 steps) against 17.33
    with whole views (140), lego at 400x400 24.36 against 21.44; at 135x240 (32k pixels) whole
    views did better, a hash grid -> splat student 22.62 dB against 21.95 with windows of
    about a quarter of its pixels (apps/results/splat_windows_cpu/bench.md)."""
    ssim_weight: float = 0.2
    """Loss = (1 - w) * L1 + w * (1 - SSIM)."""
    lr_means: float = 1.6e-4
    """Learning rate of the means, times the scene extent; decays 100x over the run."""
    lr_scales: float = 5e-3
    """Learning rate of the log scales."""
    lr_quats: float = 1e-3
    """Learning rate of the rotations."""
    lr_opacities: float = 5e-2
    """Learning rate of the opacity logits."""
    lr_sh0: float = 2.5e-3
    """Learning rate of the base colour; the higher SH bands use 1/20 of it."""
    scene_extent: float = 0.0
    """Radius of the cameras around the scene centre x 1.1 (box units; set at initialisation).
    Scales the means' learning rate and the densification thresholds."""
    densify: DensifyConfig = field(default_factory=lambda: DensifyConfig(max_gaussians=300_000))
    """Clone / split / prune / reset schedule (steps of the 30k-step reference schedule) and
    the cap on the number of Gaussians (``--max-gaussians``)."""
    render: SplatRenderConfig = field(default_factory=SplatRenderConfig)
    """Rasterization."""


@register
class SplatModel(nn.Module):
    """Gaussian splats trained by rasterization (``fieldkit train --model splat``)."""

    kind: ClassVar[str] = "splat"
    config_class: ClassVar[type] = SplatConfig
    pinhole_only: ClassVar[bool] = True
    """Rasterization projects through pinholes: runs train and evaluate on undistorted photos
    (``fieldkit/data/undistort.py``)."""
    default_lr: ClassVar[float] = 1.0
    """``--lr`` multiplies every per-parameter learning rate of ``SplatConfig``."""
    default_pose_start: ClassVar[float] = 0.0
    """``--pose-opt`` from the first step: a camera moves once an epoch, and waiting a quarter
    of 800 steps cost 0.45-0.86 dB with turned poses (it saved 0.41-0.83 with exact ones;
    apps/results/pose_opt_cpu)."""
    presets: ClassVar[dict] = {
        "fast": {"sh_degree": 1, "init_points": 10000,
                 "densify": {"max_gaussians": 100_000}},
        "quality": {"init_points": 50000, "densify": {"max_gaussians": 1_000_000}},
    }

    def __init__(self, config: SplatConfig, num: int = 0):
        super().__init__()
        if not 0 <= config.sh_degree <= 3:
            raise ValueError(f"sh_degree must be 0..3, not {config.sh_degree}")
        if config.step_pixels < 0:
            raise FieldkitError(f"--splat.step-pixels {config.step_pixels}: pass the most "
                                f"pixels a step draws, or 0 for whole views")
        self.config = config
        k = (config.sh_degree + 1) ** 2
        shapes = {"means": (3,), "scales": (3,), "quats": (4,), "opacities": (),
                  "sh0": (1, 3), "shN": (k - 1, 3)}
        self.params = nn.ParameterDict({n: nn.Parameter(torch.zeros(num, *s))
                                        for n, s in shapes.items()})
        self.active_sh_degree = config.sh_degree
        self._warned_distortion = False

    # ------------------------------------------------------------------ initialisation
    @property
    def num_gaussians(self) -> int:
        return self.params["means"].shape[0]

    def set_gaussians(self, params: dict[str, Tensor]) -> None:
        """Replace every parameter (e.g. from a .ply or an initialisation)."""
        for name in KEYS:
            value = params[name].detach().to(self.params[name])
            if name == "shN":  # fit the SH degree of this model
                want = self.params["shN"].shape[1]
                have = value.shape[1]
                value = value[:, :want] if have >= want else torch.cat(
                    [value, value.new_zeros(len(value), want - have, 3)], 1)
            self.params[name] = nn.Parameter(value.contiguous())

    def initialize(self, points: Tensor | None, colors: Tensor | None, extent: float,
                   generator: torch.Generator | None = None) -> None:
        """Gaussians at ``points`` [P, 3] (box coordinates) with ``colors`` [P, 3] in [0, 1], or
        ``init_points`` random ones in [-1, 1]^3 with random colours; isotropic scales from the
        mean distance to the 3 nearest neighbours. ``extent`` sets ``config.scene_extent``."""
        c = self.config
        if points is None or len(points) == 0:
            points = torch.rand(c.init_points, 3, generator=generator) * 2 - 1
            colors = torch.rand(c.init_points, 3, generator=generator)
        n = len(points)
        dist = knn_mean_distance(points.float(), k=3).clamp_min(1e-7)
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1
        self.config.scene_extent = float(extent)
        self.set_gaussians({
            "means": points.float(), "scales": torch.log(dist * c.init_scale)[:, None].repeat(1, 3),
            "quats": quats, "opacities": torch.full((n,), math.log(c.init_opacity / (1 - c.init_opacity))),
            "sh0": ((colors.float() - 0.5) / C0)[:, None, :],
            "shN": torch.zeros(n, (c.sh_degree + 1) ** 2 - 1, 3)})

    def init_from_scene(self, scene, init_file: Path | None = None) -> None:
        """Initial Gaussians for training on ``scene``: a splat file (3DGS .ply, .spz, ...;
        world units) when given, else the scene's sparse points (COLMAP), else ``init_points`` drawn as ``init_region``
        says; sets the scene extent."""
        from fieldkit.errors import warn
        from fieldkit.splats.foreign import antialiased_of, read_splats
        from fieldkit.splats.init import frustum_points
        from fieldkit.splats.transform import splats_to_box

        centers = scene.cameras.positions[scene.split("train")]
        extent = 1.1 * float((centers - centers.mean(0)).norm(dim=-1).max())
        if init_file is not None:
            if antialiased_of(init_file) and not self.config.render.antialiased:
                warn(f"{Path(init_file).name} was trained in the antialiased mode; pass "
                     "--splat.render.antialiased to go on in it")
            self.set_gaussians(splats_to_box(read_splats(init_file), scene.normalisation))
            self.config.scene_extent = extent
            return
        generator = torch.Generator().manual_seed(0)
        points, colors = scene.points, None
        if scene.point_rgb is not None:
            colors = scene.point_rgb.float() / 255
        if (points is None or len(points) == 0) and self.config.init_region == "frustum":
            points, colors = frustum_points(scene, self.config.init_points,
                                            self.config.render.bound, generator)
        self.initialize(points, colors, extent, generator)

    @staticmethod
    def trainer_class() -> type:
        """The training loop of this model (whole images, densification)."""
        from fieldkit.splats.trainer import SplatTrainer

        return SplatTrainer

    # ------------------------------------------------------------------ rendering
    def sh_coeffs(self) -> Tensor:
        """[N, K', 3] the SH coefficients in use, K' = (active_sh_degree + 1)^2."""
        p = self.params
        return torch.cat([p["sh0"], p["shN"][:, :(self.active_sh_degree + 1) ** 2 - 1]], 1)

    def colors(self, camera_center: Tensor) -> Tensor:
        """[N, 3] view-dependent colours seen from ``camera_center`` [3]."""
        p = self.params
        deg = self.active_sh_degree
        coeffs = self.sh_coeffs()  # [N, K', 3]
        if deg == 0:
            return (coeffs[:, 0] * C0 + 0.5).clamp_min(0)
        dirs = p["means"] - camera_center
        dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        basis = sh_encode(dirs, deg + 1)  # [N, K']
        return ((basis[:, :, None] * coeffs).sum(1) + 0.5).clamp_min(0)

    def rasterize(self, camera: Cameras, background: Tensor):
        """Differentiable render of camera 0 of ``camera``: (outputs [H, W, C], projection)."""
        if camera.distortion is not None and not self._warned_distortion:
            warnings.warn("splats render distorted cameras as ideal pinholes", stacklevel=2)
            self._warned_distortion = True
        p, rc = self.params, self.config.render
        c2w = camera.c2w[0]
        viewmat = torch.linalg.inv(c2w)
        raster, extra = rasterize, {}
        if choose_splat_backend(rc.backend, p["means"].device) == "gsplat":
            from fieldkit.render.splat_gsplat import rasterize_gsplat as raster
        elif use_cpu_blend(rc.backend, p["means"]):
            extra = {"cpu_blend": True}
        return raster(p["means"], p["quats"], torch.exp(p["scales"]),
                      torch.sigmoid(p["opacities"]), self.colors(c2w[:3, 3]), viewmat,
                      camera.K[0], int(camera.width[0]), int(camera.height[0]),
                      background=background, near=rc.near, eps2d=rc.eps2d,
                      tile_size=rc.tile_size, antialiased=rc.antialiased, **extra)

    @torch.no_grad()
    def render(self, cameras: Cameras, background: Tensor) -> dict[str, Tensor]:
        """Render the first camera: rgb [H, W, 3], depth [H, W, 1] (distance along the ray, as
        the volumetric models), alpha [H, W, 1]."""
        out, _ = self.rasterize(cameras[0], background)
        norm = cameras.ray_length_per_depth(0)
        return {"rgb": out["rgb"].clamp(0, 1), "depth": out["depth"] * norm[..., None],
                "alpha": out["alpha"]}

    def density(self, points: Tensor) -> Tensor:
        """[M, 3] box points -> [M] Gaussian-mixture density sum_i o_i exp(-d_i^2 / 2)."""
        p = self.params
        return mixture_density(points, p["means"], p["quats"], torch.exp(p["scales"]),
                               torch.sigmoid(p["opacities"]))

    # ------------------------------------------------------------------ training hooks
    def update_grid(self, step: int) -> None:
        """Splats have no occupancy grid."""

    def param_groups(self, lr: float) -> list[dict]:
        """One Adam group per parameter (``name`` = its key), 3DGS learning rates x ``lr``."""
        c = self.config
        rates = {"means": c.lr_means * max(c.scene_extent, 1e-6), "scales": c.lr_scales,
                 "quats": c.lr_quats, "opacities": c.lr_opacities, "sh0": c.lr_sh0,
                 "shN": c.lr_sh0 / 20}
        return [{"name": n, "params": [self.params[n]], "lr": rates[n] * lr} for n in KEYS]

    def regularization(self) -> Tensor | None:
        return None

    # ------------------------------------------------------------------ description
    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def describe(self) -> str:
        c = self.config
        return "\n".join([
            f"splat model: {self.num_gaussians:,} Gaussians, SH degree {c.sh_degree} "
            f"({self.num_params:,} parameters, {self.num_params * 4 / 2**20:.1f} MiB as float32)",
            f"  densify   {c.densify.strategy}, refine steps {c.densify.refine_start}-"
            f"{c.densify.refine_stop} every "
            f"{c.densify.refine_every}, cap {c.densify.max_gaussians:,} Gaussians",
            f"  renderer  tiles {c.render.tile_size} px, eps2d {c.render.eps2d}"
            f"{' (antialiased)' if c.render.antialiased else ''}, bound {c.render.bound:g}"])

    # ------------------------------------------------------------------ persistence
    def load_state_dict(self, state: dict[str, Tensor], strict: bool = True, assign: bool = False):
        """Resize to the incoming Gaussians, then load (N is not fixed)."""
        prefix = "params."
        if all(prefix + k in state for k in KEYS):
            self.set_gaussians({k: state[prefix + k] for k in KEYS})
        return super().load_state_dict(state, strict=strict, assign=assign)

    def save(self, directory: Path, weights: str = "float32") -> Path:
        """Write ``directory/model.safetensors`` (parameters as ``weights``: float32 or
        float16, and config metadata)."""
        return save_model(self, directory, weights)

    @classmethod
    def load(cls, directory: Path, device: str | torch.device = "cpu") -> SplatModel:
        """Rebuild a splat model from ``directory/model.safetensors`` alone (no pickling)."""
        return load_model_dir(cls, directory, device)

    def export_params(self) -> dict[str, Tensor]:
        """Detached copies of the parameters (box coordinates)."""
        return {k: v.detach().clone() for k, v in self.params.items()}


def knn_mean_distance(points: Tensor, k: int = 3, chunk: int = 4096) -> Tensor:
    """[P, 3] -> [P] mean distance to the ``k`` nearest other points (brute force in chunks)."""
    n = len(points)
    if n <= 1:
        return torch.full((n,), 0.01)
    k = min(k, n - 1)
    out = []
    for s in range(0, n, chunk):
        d = torch.cdist(points[s:s + chunk], points)  # [c, P]
        out.append(d.topk(k + 1, largest=False).values[:, 1:].mean(1))
    return torch.cat(out)
