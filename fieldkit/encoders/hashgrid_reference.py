"""Brute-force hash-grid encodings for tests: one point, one level, one corner at a time.

``hashgrid_reference`` follows fieldkit's corner-aligned lattice; ``hashgrid_reference_tcnn``
follows tiny-cuda-nn's GridEncoding kernel step by step (float32 ``pos = x * s_l + 0.5``,
uint32 hashing, dense indices that wrap modulo the level size), written independently of
``fieldkit.encoders.hashgrid`` so that the module's tcnn convention is checked against it.
Both are differentiable with respect to ``table`` and meant for ~50 points.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

PRIMES = (1, 2654435761, 805459861)
"""Per-axis multipliers of instant-ngp's spatial hash."""


def hashgrid_reference(x: Tensor, table: Tensor, offsets, resolutions, log2_table_size: int,
                       features: int) -> Tensor:
    """Brute-force encoding for tests: x [N, 3] -> [N, L * features], one corner at a time.

    offsets [L (+1)] level starts in ``table [M, features]``; resolutions [L] cells per axis.
    ``pos = x * N_l`` is rounded to float32 like the module's (the cell choice and the fraction
    then agree exactly); everything after that is float64. Differentiable with respect to
    ``table``. Meant for ~50 points.
    """
    offsets = [int(o) for o in offsets]
    resolutions = [int(r) for r in resolutions]
    size = 2**log2_table_size
    rows = []
    for p in x.detach().float().clamp(0, 1).tolist():
        feats = []
        for level, n in enumerate(resolutions):
            base, frac = [], []
            for d in range(3):
                pos = torch.tensor(p[d], dtype=torch.float32) * n   # float32 product
                cell = min(math.floor(pos.item()), n - 1)
                base.append(cell)
                frac.append(pos.item() - cell)
            acc = torch.zeros(features, dtype=torch.float64)
            for c in range(8):
                v = [base[d] + ((c >> d) & 1) for d in range(3)]
                if (n + 1) ** 3 <= size:
                    i = v[0] + v[1] * (n + 1) + v[2] * (n + 1) ** 2
                else:
                    i = (v[0] * PRIMES[0] ^ v[1] * PRIMES[1] ^ v[2] * PRIMES[2]) % size
                w = 1.0
                for d in range(3):
                    w *= frac[d] if (c >> d) & 1 else 1.0 - frac[d]
                acc = acc + w * table[offsets[level] + i].double()
            feats.append(acc)
        rows.append(torch.cat(feats))
    return torch.stack(rows).to(table.dtype)


def tcnn_levels(num_levels: int, log2_table_size: int, base_resolution: int,
                per_level_scale: float) -> list[tuple]:
    """tcnn's per-level (scale s as np.float32, vertices res, rows, first row) from its
    constructor: ``s = 2**(l * log2(b)) * base - 1``, ``res = ceil(s) + 1`` (float32), rows
    ``min(2**T, next multiple of 8 of res**3)``."""
    f32 = np.float32
    log2_b = f32(np.log2(f32(per_level_scale)))
    levels, offset = [], 0
    for level in range(num_levels):
        s = f32(f32(np.exp2(f32(f32(level) * log2_b))) * f32(base_resolution)) - f32(1)
        res = int(math.ceil(float(s))) + 1
        size = min(2**log2_table_size, -(-res**3 // 8) * 8)
        levels.append((s, res, size, offset))
        offset += size
    return levels


def hashgrid_reference_tcnn(x: Tensor, table: Tensor, num_levels: int, features: int,
                            log2_table_size: int, base_resolution: int,
                            per_level_scale: float) -> Tensor:
    """tiny-cuda-nn's HashGrid of ``table`` [M, features] (its parameter vector as rows):
    x [N, 3] in [0, 1] -> [N, num_levels * features], level-major.

    Per level l: ``s = 2**(l * log2(b)) * base - 1`` and ``res = ceil(s) + 1`` in float32; the
    level holds ``min(2**T, next multiple of 8 of res**3)`` rows; a vertex ``g`` indexes
    ``g0 + g1 res + g2 res**2`` when ``res**3`` fits, else ``g0 ^ g1 * 2654435761 ^
    g2 * 805459861`` in uint32, either taken modulo the level size.
    """
    levels = tcnn_levels(num_levels, log2_table_size, base_resolution, per_level_scale)
    if levels[-1][3] + levels[-1][2] != table.shape[0]:
        raise ValueError(f"table has {table.shape[0]} rows, the tcnn layout "
                         f"{levels[-1][3] + levels[-1][2]}")
    f32 = np.float32
    rows = []
    for p in x.detach().float().clamp(0, 1).numpy():
        feats = []
        for s, res, size, off in levels:
            grid, frac = [], []
            for d in range(3):
                pos = f32(f32(p[d]) * s) + f32(0.5)
                g = int(math.floor(float(pos)))
                grid.append(g)
                frac.append(float(pos - f32(g)))
            acc = torch.zeros(features, dtype=torch.float64)
            for c in range(8):
                v = [grid[d] + ((c >> d) & 1) for d in range(3)]
                if res**3 <= size:
                    i = v[0] + v[1] * res + v[2] * res * res
                else:
                    i = 0
                    for d in range(3):
                        i ^= (v[d] * PRIMES[d]) & 0xFFFFFFFF
                w = 1.0
                for d in range(3):
                    w *= frac[d] if (c >> d) & 1 else 1.0 - frac[d]
                acc = acc + w * table[off + i % size].double()
            feats.append(acc)
        rows.append(torch.cat(feats))
    return torch.stack(rows).to(table.dtype)
