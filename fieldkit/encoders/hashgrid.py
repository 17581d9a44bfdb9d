"""Multiresolution hash encoding (Instant-NGP, Müller et al. 2022) in pure PyTorch.

Level ``l`` has resolution ``N_l = floor(base * b**l)`` with ``b = exp((ln max - ln base) / (L - 1))``
and a corner-aligned grid of vertices ``0..N_l`` per axis (``pos = x * N_l``). Its table holds
``min(2**T, (N_l + 1)**3)`` entries: coarse levels that fit are indexed densely
(``x + y (N+1) + z (N+1)**2``), the others through the spatial hash
``(x * 1 ^ y * 2654435761 ^ z * 805459861) mod 2**T``. All levels live in one parameter
``table [sum entries, F]`` with per-level ``offsets``, as in instant-ngp.

Two implementations compute the same function (``HashGrid(config, impl=...)``):

- ``"fused"`` (default): a custom ``autograd.Function``. Levels and corners are computed in one
  vectorised pass in level-major layout ``[L, N]``; the 8 corners are unrolled, so that
  ``torch.compile`` fuses hashing, gather and interpolation into one loop with no reduction. The
  backward recomputes indices and weights from ``x`` (nothing of size ``[N, L, 8]`` is kept) and
  scatter-adds into the table gradient.
- ``"torch"``: the same arithmetic with plain autograd; the simple twin that ``fused`` is
  tested against.

``hashgrid_reference`` is a per-point, per-level, per-corner Python loop for tests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

PRIMES = (1, 2654435761, 805459861)
"""Per-axis multipliers of the spatial hash (instant-ngp / tiny-cuda-nn)."""


@dataclass
class HashGridConfig:
    """Shape of a multiresolution hash grid."""

    num_levels: int = 16
    """Number of resolution levels L."""
    features_per_level: int = 2
    """Features F stored per table entry."""
    log2_table_size: int = 19
    """T: each level has at most 2**T entries."""
    base_resolution: int = 16
    """Resolution N_0 of the coarsest level (cells per axis)."""
    max_resolution: int = 2048
    """Resolution of the finest level."""

    def resolutions(self) -> list[int]:
        """[L] cells per axis of each level, ``floor(base * b**l)``."""
        L, base, top = self.num_levels, self.base_resolution, self.max_resolution
        if L == 1:
            return [base]
        b = math.exp((math.log(top) - math.log(base)) / (L - 1))
        # the 1e-9 keeps floor(base * b**(L-1)) == max against rounding
        return [int(math.floor(base * b**level * (1 + 1e-9))) for level in range(L)]

    def table_sizes(self) -> list[int]:
        """[L] entries of each level's table, ``min(2**T, (N_l + 1)**3)``."""
        return [min(2**self.log2_table_size, (r + 1) ** 3) for r in self.resolutions()]


def _level_layout(config: HashGridConfig) -> tuple[list[int], list[int], list[bool]]:
    """(resolutions [L], offsets [L + 1], dense [L]) of the flat table."""
    res, sizes = config.resolutions(), config.table_sizes()
    offsets = [0]
    for s in sizes:
        offsets.append(offsets[-1] + s)
    dense = [(r + 1) ** 3 <= 2**config.log2_table_size for r in res]
    return res, offsets, dense


def _corners(x: Tensor, res: Tensor, mult: Tensor, dense: Tensor, offsets: Tensor, mask: int):
    """Yield ``(index [L, N] int64, weight [L, N])`` for the 8 corners of each point's cell.

    x [N, 3] in [0, 1]; res [L] float cells per axis; mult [3, L] int64 per-axis multipliers
    (dense strides or hash primes); dense [L] bool; offsets [L] int64 level starts in the table.
    Corner ``c`` takes the upper vertex along axis ``d`` when bit ``d`` of ``c`` is set.
    """
    r = res[:, None]                                              # [L, 1]
    xt = x.clamp(0.0, 1.0).t().contiguous()[:, None, :]          # [3, 1, N], N fastest
    pos = xt * r                                                  # [3, L, N]
    cell = torch.minimum(pos.floor(), r - 1)                      # x = 1 stays in the last cell
    w_hi = pos - cell                                             # [3, L, N]
    w_lo = 1 - w_hi
    h_lo = cell.long() * mult[:, :, None]                         # [3, L, N] int64
    h_hi = h_lo + mult[:, :, None]
    dense, off = dense[:, None], offsets[:, None]
    for c in range(8):
        bx, by, bz = c & 1, (c >> 1) & 1, (c >> 2) & 1
        hx = (h_hi if bx else h_lo)[0]
        hy = (h_hi if by else h_lo)[1]
        hz = (h_hi if bz else h_lo)[2]
        idx = torch.where(dense, hx + hy + hz, (hx ^ hy ^ hz) & mask) + off
        w = (w_hi if bx else w_lo)[0] * (w_hi if by else w_lo)[1] * (w_hi if bz else w_lo)[2]
        yield idx, w


def _corner_grid(x: Tensor, res: Tensor, mult: Tensor, offsets: Tensor, mask: int | None,
                 ) -> tuple[Tensor, Tensor]:
    """All corners at once as broadcast expressions: (index [L', N, 8] int64, weight [L', N, 8]).

    For a run of L' levels that are all dense (``mask=None``) or all hashed. Same values as
    ``_corners``; written without stacking or ``where`` so that torch.compile fuses index,
    weight and the following scatter into one loop (used by the compiled backward).
    """
    c = torch.arange(8, device=x.device)
    bits = torch.stack([c & 1, (c >> 1) & 1, (c >> 2) & 1])[:, None, None, :]   # [3, 1, 1, 8]
    r = res[:, None, None]                                                      # [L', 1, 1]
    pos = r * x.clamp(0.0, 1.0).t().contiguous()[:, None, :, None]             # [3, L', N, 1]
    cell = torch.minimum(pos.floor(), r - 1)
    w_hi = pos - cell
    m = mult[:, :, None, None]
    h = (cell.long() + bits) * m                                                # [3, L', N, 8]
    w = torch.where(bits == 1, w_hi, 1 - w_hi)                                  # [3, L', N, 8]
    idx = h[0] + h[1] + h[2] if mask is None else (h[0] ^ h[1] ^ h[2]) & mask
    return idx + offsets[:, None, None], w[0] * w[1] * w[2]


def _encode_torch(x: Tensor, table: Tensor, res, mult, dense, offsets, mask: int) -> Tensor:
    """Plain-autograd encoding: x [N, 3] -> [L, N, F]."""
    out = None
    for idx, w in _corners(x, res, mult, dense, offsets, mask):
        v = table.index_select(0, idx.reshape(-1)).view(*idx.shape, -1)  # [L, N, F]
        v = v * w[..., None].to(table.dtype)
        out = v if out is None else out + v
    return out


EAGER_CHUNK = 2**15
"""Points per block in the eager ``fused`` path: keeps the [L, chunk] temporaries in cache and
below glibc's mmap threshold, so they are reused instead of page-faulted on every call."""


def _chunks(n: int):
    """Slices of ``range(n)``: one when compiling (the graph stays small), else EAGER_CHUNK long."""
    step = n if torch.compiler.is_compiling() else EAGER_CHUNK
    return [slice(s, min(s + step, n)) for s in range(0, n, max(step, 1))]


def _scatter_add_(grad_table: Tensor, idx: Tensor, values: Tensor) -> None:
    """Eager grad_table [M, F] += values [L, n, F] at rows idx [L, n] (duplicates accumulate)."""
    if grad_table.shape[1] == 2 and grad_table.dtype == torch.float32:
        # one 8-byte read-modify-write per row instead of two (measured fastest eager path)
        torch.view_as_complex(grad_table).index_add_(
            0, idx.reshape(-1), torch.view_as_complex(values.reshape(-1, 2)))
    else:
        grad_table.index_add_(0, idx.reshape(-1), values.reshape(-1, grad_table.shape[1]))


class _HashGridFunction(torch.autograd.Function):
    """table [M, F] -> [L, N, F]; gradient for the table only (x is treated as a constant)."""

    @staticmethod
    def forward(x, table, res, mult, dense, offsets, num_dense, mask):
        parts = _chunks(x.shape[0])
        if len(parts) == 1:
            return _encode_torch(x, table, res, mult, dense, offsets, mask)
        out = table.new_empty(res.shape[0], x.shape[0], table.shape[1])
        for p in parts:
            out[:, p] = _encode_torch(x[p], table, res, mult, dense, offsets, mask)
        return out

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, table, res, mult, dense, offsets, num_dense, mask = inputs
        ctx.save_for_backward(x, res, mult, dense, offsets)
        ctx.mask, ctx.num_dense = mask, num_dense
        ctx.table_shape = table.shape

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        """grad_out [L, N, F] -> grad_table [M, F], recomputing indices and weights from x."""
        x, res, mult, dense, offsets = ctx.saved_tensors
        grad_table = grad_out.new_zeros(ctx.table_shape)
        if torch.compiler.is_compiling():
            # fused loops of atomic adds (dense levels, hashed levels); nothing [L, N, 8]-sized
            # is materialised
            nd, L = ctx.num_dense, res.shape[0]
            import os
            variant = os.environ.get("HG_BWD", "split")
            if variant == "loop":
                for idx, w in _corners(x, res, mult, dense, offsets, ctx.mask):
                    grad_table.index_put_((idx,), grad_out * w[..., None], accumulate=True)
                return None, grad_table, None, None, None, None, None, None
            if variant == "levels":
                groups = [(slice(l, l + 1), None if l < nd else ctx.mask) for l in range(L)]
            else:
                groups = [(slice(0, nd), None), (slice(nd, L), ctx.mask)]
            for lv, mask in groups:
                if lv.start == lv.stop:
                    continue
                idx, w = _corner_grid(x, res[lv], mult[:, lv], offsets[lv], mask)
                values = grad_out[lv, :, None, :] * w[..., None].to(grad_out.dtype)
                grad_table.index_put_((idx,), values, accumulate=True)
            return None, grad_table, None, None, None, None, None, None
        for p in _chunks(x.shape[0]):
            g = grad_out[:, p]
            for idx, w in _corners(x[p], res, mult, dense, offsets, ctx.mask):
                _scatter_add_(grad_table, idx, g * w[..., None].to(g.dtype))
        return None, grad_table, None, None, None, None, None, None


class HashGrid(nn.Module):
    """Multiresolution hash encoding: x [N, 3] in [0, 1] -> features [N, L * F].

    ``impl="fused"`` (default) uses the custom autograd function, ``impl="torch"`` the plain
    autograd twin; both give the same values and table gradients.
    """

    def __init__(self, config: HashGridConfig, impl: str = "fused"):
        super().__init__()
        if impl not in ("fused", "torch"):
            raise ValueError(f"impl must be 'fused' or 'torch', not {impl!r}")
        self.config, self.impl = config, impl
        L, F, T = config.num_levels, config.features_per_level, config.log2_table_size
        res, offsets, dense = _level_layout(config)
        self.out_dim = L * F
        self.num_dense_levels = sum(dense)
        self.mask = 2**T - 1
        self.table = nn.Parameter(torch.empty(offsets[-1], F).uniform_(-1e-4, 1e-4))
        """[sum entries, F] all levels' tables, level l at rows offsets[l]:offsets[l+1]."""
        mult = [[1, r + 1, (r + 1) ** 2] if d else list(PRIMES) for r, d in zip(res, dense)]
        self.register_buffer("resolutions", torch.tensor(res, dtype=torch.float32), False)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.int64), False)
        self.register_buffer("dense", torch.tensor(dense), False)
        self.register_buffer("mult", torch.tensor(mult, dtype=torch.int64).t().contiguous(), False)

    def forward(self, x: Tensor) -> Tensor:
        """x [N, 3] in [0, 1] (clamped) -> [N, out_dim] in the table's dtype, level-major."""
        x = x.to(self.resolutions.dtype)
        args = (self.resolutions, self.mult, self.dense, self.offsets[:-1])
        if self.impl == "fused":
            out = _HashGridFunction.apply(x.detach(), self.table, *args, self.num_dense_levels,
                                          self.mask)
        else:
            out = _encode_torch(x, self.table, *args, self.mask)
        return out.permute(1, 0, 2).reshape(x.shape[0], self.out_dim)   # [L, N, F] -> [N, L*F]

    def extra_repr(self) -> str:
        c = self.config
        return (f"levels={c.num_levels}, features={c.features_per_level}, "
                f"log2_table_size={c.log2_table_size}, resolution={c.base_resolution}.."
                f"{c.max_resolution}, dense_levels={self.num_dense_levels}, impl={self.impl!r}")


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
