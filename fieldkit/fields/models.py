"""The volumetric models: hash grid (instant-ngp), tri-plane (K-Planes) and MLP (vanilla NeRF).

Each is ``VolumeModel`` with another position encoder; configs are dataclasses whose every field
is documented, and presets are override dicts on top of the defaults (``fieldkit train
--preset``). Byte budgets of the defaults (float32 on disk): hashgrid ~13 MB, triplane ~4 MB,
mlp ~0.3 MB.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from fieldkit.encoders.frequency import FrequencyConfig, FrequencyEncoder
from fieldkit.encoders.hashgrid import HashGrid, HashGridConfig
from fieldkit.encoders.triplane import TriPlane, TriPlaneConfig
from fieldkit.fields.nerf import RenderConfig, VolumeModel
from fieldkit.fields.radiance import DecoderConfig
from fieldkit.fields.registry import register


@dataclass
class HashGridModelConfig:
    """Instant-NGP: multiresolution hash grid + tiny density and colour MLPs."""

    encoder: HashGridConfig = field(default_factory=lambda: HashGridConfig(log2_table_size=17))
    """Hash grid (2^17 entries per level: Adam's per-step cost on a CPU scales with the table)."""
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    """Density and colour MLPs."""
    render: RenderConfig = field(default_factory=RenderConfig)
    """Ray marching."""


@register
class HashGridModel(VolumeModel):
    """Hash-grid NeRF with an occupancy grid (instant-ngp style), pure PyTorch."""

    kind, config_class, default_lr = "hashgrid", HashGridModelConfig, 1e-2
    presets = {
        "fast": {"encoder": {"log2_table_size": 15, "max_resolution": 1024},
                 "render": {"render_steps": 256}},
        "quality": {"encoder": {"log2_table_size": 19, "max_resolution": 4096},
                    "render": {"render_steps": 1024, "grid_resolution": 128}},
    }

    @staticmethod
    def make_encoder(config: HashGridModelConfig) -> nn.Module:
        return HashGrid(config.encoder)


@dataclass
class TriPlaneModelConfig:
    """K-Planes (static): multiscale xy/xz/yz feature planes + small MLPs."""

    encoder: TriPlaneConfig = field(
        default_factory=lambda: TriPlaneConfig(resolutions=(32, 64, 128, 256), features=4))
    """Feature planes (4 scales x 4 channels: about 1M parameters, a third of the hash grid's)."""
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    """Density and colour MLPs."""
    render: RenderConfig = field(default_factory=RenderConfig)
    """Ray marching."""
    tv_weight: float = 1e-4
    """Weight of the planes' total-variation loss (smoothness)."""
    l1_weight: float = 0.0
    """Weight of the planes' L1 loss (sparsity)."""


@register
class TriPlaneModel(VolumeModel):
    """Tri-plane NeRF: compact, editable feature planes; same renderer as the hash grid.

    Default learning rate 2e-2: on lego (200 px), 1400 steps from the photos reached 27.71 dB
    against 27.00 with 1e-2, and 800 steps distilled from a hash grid 27.96 against 27.47
    (4e-2: 28.05), and 300 s (~5000 steps) from the photos 30.25 against 30.07;
    apps/results/distill_lego_cpu_v3/sweep.md. Runs of 20000 steps were not compared."""

    kind, config_class, default_lr = "triplane", TriPlaneModelConfig, 2e-2
    default_pose_start = 0.25
    """``--pose-opt`` waits for a quarter of the budget: on the demo scene (600 steps, three
    seeds) that gained 0.37-1.62 dB with turned poses and lost 0.26-0.60 dB with exact ones,
    against 0.65-3.35 from the first step (apps/results/pose_opt_cpu)."""
    presets = {
        "fast": {"encoder": {"resolutions": (32, 64, 128), "features": 4},
                 "render": {"render_steps": 256}},
        "quality": {"encoder": {"resolutions": (64, 128, 256, 512), "features": 8},
                    "render": {"render_steps": 1024, "grid_resolution": 128}},
    }

    @staticmethod
    def make_encoder(config: TriPlaneModelConfig) -> nn.Module:
        return TriPlane(config.encoder)

    def regularization(self) -> Tensor | None:
        c, enc = self.config, self.field.encoder
        terms = []
        if c.tv_weight:
            terms.append(c.tv_weight * enc.total_variation())
        if c.l1_weight:
            terms.append(c.l1_weight * enc.l1())
        return sum(terms) if terms else None


@dataclass
class MlpModelConfig:
    """Vanilla NeRF's field: frequency encoding + a deeper MLP, on the occupancy-grid renderer."""

    encoder: FrequencyConfig = field(default_factory=lambda: FrequencyConfig(num_frequencies=10))
    """Positional encoding of the point."""
    decoder: DecoderConfig = field(default_factory=lambda: DecoderConfig(
        hidden_dim=128, density_layers=4, geo_feat_dim=31, color_hidden_dim=64, color_layers=1,
        bias=True))
    """Density MLP (4 x 128) and colour MLP (1 x 64), with biases."""
    render: RenderConfig = field(default_factory=RenderConfig)
    """Ray marching."""


@register
class MlpModel(VolumeModel):
    """MLP NeRF: tiny on disk and smooth, slow to train; the compact distillation target.

    Default learning rate 1e-2: on lego (200 px) from the photos, 600 steps reached 20.42 dB
    with 2e-3, 21.44 with 5e-3 and 21.87 with 1e-2; 2000 steps 25.56 with 1e-2 against
    23.78 with 2e-3; distilled from a hash grid, 600 steps: 21.11, 23.50 and 23.88
    (apps/results/distill_lego_cpu_v5/sweep.md). Runs of 20000 steps were not compared.

    Default batch 2^12 samples a step (the fields' 2^14): an MLP gains more from steps than
    from samples, and its step costs little besides its samples. On lego (200 px), about equal
    time: from the photos 21.87 dB with 600 steps of 2^14 (83 s), 23.14 with 2400 of 2^12
    (98 s); distilled from a hash grid 23.99 with 600 of 2^14 (69 s), 25.51 with 1200 of 2^13
    (75 s), 26.21 with 2400 of 2^12 (89 s), as much as 1200 steps of 2^14 (141 s)
    (apps/results/distill_lego_cpu_v6/sweep.md)."""

    kind, config_class, default_lr = "mlp", MlpModelConfig, 1e-2
    default_target_samples = 1 << 12
    presets = {
        "fast": {"decoder": {"hidden_dim": 64, "density_layers": 3},
                 "render": {"render_steps": 256}},
        "quality": {"decoder": {"hidden_dim": 256, "density_layers": 8, "color_hidden_dim": 128},
                    "render": {"render_steps": 1024, "grid_resolution": 128}},
    }

    @staticmethod
    def make_encoder(config: MlpModelConfig) -> nn.Module:
        return FrequencyEncoder(config.encoder)
