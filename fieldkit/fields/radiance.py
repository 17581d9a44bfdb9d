"""Radiance field = position encoder + small MLP decoders (density, view-dependent colour).

Composed through the constructor (``RadianceField(encoder, config)``) so the same decoder serves
hash-grid, tri-plane and plain frequency encoders. Points are in box coordinates; the field maps
``[-bound, bound]^3`` onto the encoder's ``[0, 1]^3``.

Mixed precision (``DecoderConfig.precision``): the two MLPs may run under ``torch.autocast``
(bfloat16). The encoder, the SH encoding and the activations stay float32: the MLP outputs are
cast back to float32 before ``trunc_exp`` (an exponent in bfloat16 would lose 8 bits of the
density) and ``sigmoid``. Parameters and their gradients stay float32 either way.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fieldkit.encoders.sh import sh_encode
from fieldkit.errors import FieldkitError
from fieldkit.fields.activations import trunc_exp

PRECISIONS = ("auto", "fp32", "bf16")
"""Values of ``DecoderConfig.precision``."""

CPU_BF16_ROWS = 1024
"""Under bfloat16 on the CPU the MLPs' batches are padded with zero rows up to a multiple of
this. oneDNN builds bfloat16 kernels for every new batch shape, and marched batches change size
every step: padded, a handful of shapes recur and their kernels are reused
(apps/results/precision_cpu/padded.md)."""

CPU_BF16_MIN_WIDTH = 128
"""``auto`` runs MLPs at least this wide in bfloat16 on a CPU that has bfloat16 dot products:
their products dominate the field (see ``autocast_dtype``)."""


@dataclass
class DecoderConfig:
    """Sizes of the density and colour MLPs (instant-ngp's defaults)."""

    hidden_dim: int = 64
    """Width of the density MLP."""
    density_layers: int = 1
    """Hidden layers of the density MLP."""
    geo_feat_dim: int = 15
    """Features passed from the density MLP to the colour MLP."""
    color_hidden_dim: int = 64
    """Width of the colour MLP."""
    color_layers: int = 2
    """Hidden layers of the colour MLP."""
    sh_degree: int = 4
    """Spherical-harmonics degree of the view-direction encoding."""
    bias: bool = False
    """Give the linear layers biases (tiny-cuda-nn's fused MLPs have none)."""
    precision: str = "auto"
    """auto: bfloat16 autocast for the MLPs on CUDA (Ampere or newer), and on a CPU with
    bfloat16 dot products for a density MLP at least 128 wide (the MLP model), float32
    otherwise; fp32; bf16 (also where auto picks float32, often slower there: see
    ``autocast_dtype``). fp16 is refused: it would need loss scaling."""


def check_precision(precision: str) -> None:
    """Raise a one-line ``FieldkitError`` unless ``precision`` is one of ``PRECISIONS``."""
    if precision == "fp16":
        raise FieldkitError("decoder precision fp16 is not supported (it would need loss "
                            "scaling); use bf16, which has float32's range")
    if precision not in PRECISIONS:
        raise FieldkitError(f"decoder precision must be one of {', '.join(PRECISIONS)}, "
                            f"not {precision!r}")


def autocast_dtype(precision: str, device: torch.device, width: int = 0
                   ) -> torch.dtype | None:
    """The autocast dtype of MLPs ``width`` wide for ``precision`` on ``device`` (None: plain
    float32).

    ``auto`` is bfloat16 on a CUDA device that supports it, and on a CPU with bfloat16 dot
    products (avx512_bf16 or AMX) for MLPs at least CPU_BF16_MIN_WIDTH wide; float32
    elsewhere. On this project's CPU (avx512_bf16), with batches padded to CPU_BF16_ROWS, the
    MLP model (4 x 128) trained 1.61x faster from the photos and distilled 1.36x faster at
    equal PSNR; the 64-wide decoders of the hash grid and the tri-plane went 0.83x and 1.09x
    (apps/results/precision_cpu/padded.md)."""
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if _cuda_bf16(device.index) else None
    if device.type == "cpu" and width >= CPU_BF16_MIN_WIDTH and _cpu_bf16():
        return torch.bfloat16
    return None


def _cpu_bf16() -> bool:
    """Whether this CPU has bfloat16 dot products (avx512_bf16 or AMX) for oneDNN."""
    return cpu_bf16_status()[0]


@functools.lru_cache(maxsize=None)
def cpu_bf16_status() -> tuple[bool, str]:
    """(whether this CPU has bfloat16 dot products for oneDNN, which ones or why not)."""
    if not torch.backends.mkldnn.is_available():
        return False, "this torch build has no oneDNN"
    checks = {"avx512_bf16": "_is_avx512_bf16_supported", "amx": "_is_amx_tile_supported"}
    found = [name for name, fn in checks.items() if bool(getattr(torch.cpu, fn, lambda: False)())]
    if not found:
        return False, "this CPU has no bf16 dot products (avx512_bf16 or AMX)"
    return True, " and ".join(found)


@functools.lru_cache(maxsize=None)
def _cuda_bf16(index: int | None) -> bool:
    """Whether CUDA device ``index`` (None: the current one) does bfloat16 natively (sm_80+)."""
    return torch.cuda.get_device_capability(index)[0] >= 8


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int, bias: bool = False
        ) -> nn.Sequential:
    """``layers`` hidden ReLU layers, no output activation (no biases by default, as
    tiny-cuda-nn)."""
    dims = [in_dim] + [hidden] * layers
    mods: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        mods += [nn.Linear(a, b, bias=bias), nn.ReLU(inplace=True)]
    mods.append(nn.Linear(dims[-1], out_dim, bias=bias))
    return nn.Sequential(*mods)


class RadianceField(nn.Module):
    """sigma(x) and rgb(x, d) from an encoder with ``out_dim`` features of x in [0, 1]^3."""

    def __init__(self, encoder: nn.Module, config: DecoderConfig, bound: float = 1.0):
        super().__init__()
        check_precision(config.precision)
        self.encoder, self.config, self.bound = encoder, config, float(bound)
        self.density_net = mlp(encoder.out_dim, config.hidden_dim, 1 + config.geo_feat_dim,
                               config.density_layers, config.bias)
        self.color_net = mlp(config.sh_degree ** 2 + config.geo_feat_dim,
                             config.color_hidden_dim, 3, config.color_layers, config.bias)

    def _unit(self, points: Tensor) -> Tensor:
        return ((points / self.bound + 1.0) * 0.5).clamp(0.0, 1.0)

    def _run_mlp(self, net: nn.Sequential, x: Tensor) -> Tensor:
        """net(x) [N, out] at the configured precision (x [N, in] float32); under bfloat16 on
        the CPU, x is padded to a multiple of CPU_BF16_ROWS rows and the pad cut off again."""
        dtype = autocast_dtype(self.config.precision, x.device, self.config.hidden_dim)
        if dtype is None:
            return net(x)
        n = x.shape[0]
        pad = -n % CPU_BF16_ROWS if x.device.type == "cpu" else 0
        with torch.autocast(device_type=x.device.type, dtype=dtype):
            if pad:
                return net(torch.nn.functional.pad(x, (0, 0, 0, pad)))[:n]
            return net(x)

    def _geometry(self, points: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.encoder(self._unit(points))
        h = self._run_mlp(self.density_net, feats)
        h = h.float()  # no-op in fp32; the density exponent is taken in float32
        return trunc_exp(h[:, 0] - 1.0), h[:, 1:]

    def density(self, points: Tensor) -> Tensor:
        """[N, 3] box points -> [N] density (zero outside the scene bound)."""
        sigma, _ = self._geometry(points)
        inside = (points.abs() <= self.bound).all(dim=-1)
        return sigma * inside

    def forward(self, points: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
        """[N, 3] points and unit dirs -> rgb [N, 3] in [0, 1] and density [N]."""
        sigma, geo = self._geometry(points)
        inside = (points.abs() <= self.bound).all(dim=-1)
        h = torch.cat([sh_encode(dirs, self.config.sh_degree), geo], dim=-1)
        logits = self._run_mlp(self.color_net, h)
        return torch.sigmoid(logits.float()), sigma * inside

    def param_groups(self, lr: float, weight_decay: float = 1e-6) -> list[dict]:
        """Encoder tables without weight decay; MLP weights with a little (instant-ngp)."""
        return [
            {"params": list(self.encoder.parameters()), "lr": lr, "weight_decay": 0.0,
             "name": "encoder"},
            {"params": list(self.density_net.parameters()) + list(self.color_net.parameters()),
             "lr": lr, "weight_decay": weight_decay, "name": "decoder"},
        ]
