"""NeRF positional (frequency) encoding (Mildenhall et al. 2020), no parameters.

Inputs ``x`` in [0, 1]^D (the same box as the hash grid and tri-plane) are first rescaled to
``p = 2 x - 1`` in [-1, 1]^D, the vanilla-NeRF convention for a normalised box. Each coordinate
``p`` of ``p`` is then encoded as

    gamma(p) = (p, sin(2^0 pi p), cos(2^0 pi p), ..., sin(2^(L-1) pi p), cos(2^(L-1) pi p))

with ``L = num_frequencies`` (frequencies ``2^k pi``, ``k = 0 .. L - 1``; the leading ``p`` only
with ``include_input``). Output layout, as in the NeRF code: the D rescaled inputs, then for
each ``k`` the D sines followed by the D cosines, so
``out_dim = D * (include_input + 2 L)``. At ``k = 0`` one period spans the box; at ``k`` it
spans ``2^-k`` of it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class FrequencyConfig:
    """Shape of a NeRF positional encoding."""

    num_frequencies: int = 10
    """L: sin and cos of 2^k pi p for k = 0 .. L - 1 (NeRF: 10 for positions, 4 for directions)."""
    include_input: bool = True
    """Also output the rescaled input p = 2 x - 1 itself, before the sines and cosines."""


class FrequencyEncoder(nn.Module):
    """x [..., in_dim] in [0, 1] -> [..., out_dim], ``out_dim = in_dim * (include_input + 2 L)``.

    Output dtype and device follow ``x``; nothing is learned.
    """

    def __init__(self, config: FrequencyConfig | None = None, in_dim: int = 3):
        super().__init__()
        config = FrequencyConfig() if config is None else config
        if config.num_frequencies < 0:
            raise ValueError(f"num_frequencies must be >= 0, not {config.num_frequencies}")
        if in_dim < 1:
            raise ValueError(f"in_dim must be >= 1, not {in_dim}")
        self.config, self.in_dim = config, in_dim
        self.out_dim = in_dim * (int(config.include_input) + 2 * config.num_frequencies)
        if self.out_dim == 0:
            raise ValueError("frequency encoding is empty: set num_frequencies >= 1 "
                             "or include_input=True")

    def forward(self, x: Tensor) -> Tensor:
        """x [..., in_dim] in [0, 1] -> [..., out_dim] (layout in the module docstring)."""
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"expected x [..., {self.in_dim}], got {tuple(x.shape)}")
        p = x * 2 - 1                                                 # [..., D] in [-1, 1]
        L = self.config.num_frequencies
        # [L] 2^k pi: a power of two times pi rounded to x's dtype, so no further rounding
        freqs = 2.0 ** torch.arange(L, dtype=p.dtype, device=p.device) * math.pi
        arg = p[..., None, :] * freqs[:, None]                        # [..., L, D]
        enc = torch.stack([arg.sin(), arg.cos()], dim=-2)             # [..., L, 2, D]
        enc = enc.reshape(*p.shape[:-1], 2 * L * self.in_dim)         # [..., 2 L D]
        return torch.cat([p, enc], dim=-1) if self.config.include_input else enc

    def extra_repr(self) -> str:
        c = self.config
        return (f"in_dim={self.in_dim}, num_frequencies={c.num_frequencies}, "
                f"include_input={c.include_input}, out_dim={self.out_dim}")
