"""Multiresolution hash encoding (Instant-NGP, Müller et al. 2022) in pure PyTorch.

Level ``l`` has resolution ``N_l = floor(base * b**l)`` with ``b = exp((ln max - ln base) / (L - 1))``
and a corner-aligned grid of vertices ``0..N_l`` per axis (``pos = x * N_l``). Its table holds
``min(2**T, (N_l + 1)**3)`` entries: coarse levels that fit are indexed densely
(``x + y (N+1) + z (N+1)**2``), the others through the spatial hash
``(x * 1 ^ y * 2654435761 ^ z * 805459861) mod 2**T``. All levels live in one parameter
``table [sum entries, F]`` with per-level ``offsets``, as in instant-ngp.

Two implementations compute the same function (``HashGrid(config, impl=...)``); both work
on all levels at once in level-major layout ``[L, N]`` with the 8 corners unrolled:

- ``"fused"`` (default): a custom ``autograd.Function`` whose backward recomputes indices and
  weights from ``x`` (nothing ``[N, L, 8]``-sized is kept) and scatter-adds into the table
  gradient. Eager: blocks of ``EAGER_CHUNK`` points, int32 index arithmetic, rows gathered and
  scattered as one complex64 element, the scatter split over threads by level. Under
  ``torch.compile`` (no graph breaks): the forward fuses into one loop with no reduction, the
  backward into one loop of atomic adds per level.
- ``"torch"``: plain autograd on the same arithmetic; the simple twin ``fused`` is tested against.

The tcnn convention (``HashGridConfig.convention``) computes tiny-cuda-nn's function, so the
table converts to and from tcnn's parameters (``hashgrid_tcnn.py``); brute-force references of
both conventions for tests are in ``hashgrid_reference.py``.
Timings: apps/results/bench_hashgrid.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fieldkit.encoders.hashgrid_cpu import encode_cpu, use_cpu_hashgrid
from fieldkit.encoders.hashgrid_eager import (EAGER_CHUNK, _encode_eager, _position,
                                              _position_grad_eager,
                                              _table_grad_eager)
from fieldkit.encoders.hashgrid_fast import accelerated, inference_function

PRIMES = (1, 2654435761, 805459861)
"""Per-axis multipliers of the spatial hash (instant-ngp / tiny-cuda-nn)."""


CONVENTIONS = ("fieldkit", "tcnn")
"""Vertex lattices a hash grid can use (``HashGridConfig.convention``)."""


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
    convention: str = "fieldkit"
    """Vertex lattice and table layout. fieldkit: corner-aligned vertices 0..N_l per axis
    (pos = x N_l). tcnn: tiny-cuda-nn's HashGrid (pos = x s_l + 0.5, s_l = base b^l - 1, tables
    padded to a multiple of 8 entries), so the table is tcnn's parameter vector and a run
    trained with either backend loads with the other."""
    backend: str = "auto"
    """auto: tiny-cuda-nn on CUDA when it imports and runs and the convention is tcnn, else the
    torch twin; cuda (or tcnn): require tiny-cuda-nn; torch: always the twin."""
    compile: str = "auto"
    """torch.compile the torch twin (Triton kernels on a GPU): auto (CUDA only; on the CPU it
    gave no faster training step, apps/results/bench_hashgrid.md), on, off."""

    def per_level_scale(self) -> float:
        """b = (max / base) ** (1 / (L - 1)), the growth factor between levels."""
        L, base, top = self.num_levels, self.base_resolution, self.max_resolution
        return 1.0 if L == 1 else math.exp((math.log(top) - math.log(base)) / (L - 1))

    def resolutions(self) -> list[int]:
        """[L] cells per axis of each level: ``floor(base * b**l)`` (fieldkit) or
        ``ceil(s_l)`` (tcnn)."""
        if self.convention == "tcnn":
            return [v - 1 for v in tcnn_lattice(self)[1]]
        b = self.per_level_scale()
        # the 1e-9 keeps floor(base * b**(L-1)) == max against rounding
        return [int(math.floor(self.base_resolution * b**level * (1 + 1e-9)))
                for level in range(self.num_levels)]

    def table_sizes(self) -> list[int]:
        """[L] entries of each level's table: ``min(2**T, (N_l + 1)**3)`` (fieldkit) or
        ``min(2**T, next multiple of 8 of res_l**3)`` (tcnn)."""
        top = 2**self.log2_table_size
        if self.convention == "tcnn":
            return [min(top, -(-v**3 // 8) * 8) for v in tcnn_lattice(self)[1]]
        return [min(top, (r + 1) ** 3) for r in self.resolutions()]

    def check(self) -> None:
        """Raise ValueError on a setting no implementation accepts."""
        if self.convention not in CONVENTIONS:
            raise ValueError(f"hash-grid convention must be one of {', '.join(CONVENTIONS)}, "
                             f"not {self.convention!r}")
        if self.compile not in ("auto", "on", "off"):
            raise ValueError(f"hash-grid compile must be auto, on or off, not {self.compile!r}")


def tcnn_lattice(config: HashGridConfig) -> tuple[list[float], list[int]]:
    """tiny-cuda-nn's levels: (scales s_l [L] as float32 values, vertices per axis res_l [L]).

    ``s_l = 2 ** (l * log2(b)) * base - 1`` in float32 arithmetic and ``res_l = ceil(s_l) + 1``,
    as tcnn's GridEncoding computes them from ``per_level_scale = b`` (a float32).
    """
    import numpy as np

    f32 = np.float32
    log2_b = f32(np.log2(f32(config.per_level_scale())))
    scales = [f32(f32(np.exp2(f32(f32(level) * log2_b))) * f32(config.base_resolution)) - f32(1)
              for level in range(config.num_levels)]
    return [float(s) for s in scales], [int(math.ceil(float(s))) + 1 for s in scales]


def _level_layout(config: HashGridConfig) -> dict:
    """Per-level constants of the flat table: ``scales`` [L] (pos = x * scale + shift),
    ``cell_max`` [L] (largest lower-corner vertex), ``verts`` [L] (vertices per axis, the dense
    strides), ``offsets`` [L + 1], ``dense`` [L], ``shift`` and ``wrap`` (tcnn takes dense
    indices modulo the level size, since its upper corner can step one vertex past the last)."""
    sizes, top = config.table_sizes(), 2**config.log2_table_size
    offsets = [0]
    for s in sizes:
        offsets.append(offsets[-1] + s)
    if config.convention == "tcnn":
        scales, verts = tcnn_lattice(config)
        return {"scales": scales, "cell_max": [v - 1 for v in verts], "verts": verts,
                "offsets": offsets, "dense": [v**3 <= top for v in verts], "shift": 0.5,
                "wrap": sizes}
    res = config.resolutions()
    return {"scales": [float(r) for r in res], "cell_max": [r - 1 for r in res],
            "verts": [r + 1 for r in res], "offsets": offsets,
            "dense": [(r + 1) ** 3 <= top for r in res], "shift": 0.0, "wrap": None}


# Axis order in which each corner combines its three per-axis terms. Every corner starts with
# a different pair, so no partial sum is shared between corners: torch.compile would otherwise
# store the shared pairs as [L, N] int64 buffers (8 of them, page-faulted on every call).
_PAIR_ORDER = {(0, 0, 0): (0, 1, 2), (0, 0, 1): (0, 2, 1), (0, 1, 0): (1, 2, 0),
               (0, 1, 1): (0, 1, 2), (1, 0, 0): (0, 2, 1), (1, 0, 1): (0, 1, 2),
               (1, 1, 0): (0, 1, 2), (1, 1, 1): (1, 2, 0)}


def _corners(x: Tensor, lattice: tuple, mult: Tensor, dense: Tensor, offsets: Tensor,
             mask: int, wrap: Tensor | None = None):
    """Yield ``(index [L, N] int64, weight [L, N])`` for the 8 corners of each point's cell.

    x [N, 3] in [0, 1]; lattice (scales [L], cell_max [L], shift) as ``_position``; mult [3, L]
    int64 per-axis multipliers (dense strides or hash primes); dense [L] bool; offsets [L] int64
    level starts in the table; wrap [L] int64 or None: dense indices are taken modulo it.
    Corner ``c`` takes the upper vertex along axis ``d`` when bit ``d`` of ``c`` is set.
    """
    cell, w_hi = _position(x, lattice)                            # [3, L, N]
    w_lo = 1 - w_hi
    h_lo = cell.long() * mult[:, :, None]                         # [3, L, N] int64
    h_hi = h_lo + mult[:, :, None]
    dense, off = dense[:, None], offsets[:, None]
    for c in range(8):
        bits = (c & 1, (c >> 1) & 1, (c >> 2) & 1)
        a, b, d = _PAIR_ORDER[bits]
        h = [(h_hi if bits[k] else h_lo)[k] for k in (a, b, d)]
        w = [(w_hi if bits[k] else w_lo)[k] for k in (a, b, d)]
        flat = h[0] + h[1] + h[2]
        if wrap is not None:
            flat = flat % wrap[:, None]
        idx = torch.where(dense, flat, (h[0] ^ h[1] ^ h[2]) & mask) + off
        yield idx, w[0] * w[1] * w[2]


def _corner_grid(x: Tensor, lattice: tuple, mult: Tensor, offsets: Tensor, mask: int | None,
                 wrap: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """All corners at once as broadcast expressions: (index [L', N, 8] int64, weight [L', N, 8]).

    For L' levels that are all dense (``mask=None``; indices modulo ``wrap`` [L'] when given)
    or all hashed. Same values as ``_corners``, written without stacking or ``where`` so that
    torch.compile fuses index, weight and the following scatter into one loop (the compiled
    backward).
    """
    c = torch.arange(8, device=x.device)
    bits = torch.stack([c & 1, (c >> 1) & 1, (c >> 2) & 1])[:, None, None, :]   # [3, 1, 1, 8]
    cell, w_hi = (t[..., None] for t in _position(x, lattice))                 # [3, L', N, 1]
    m = mult[:, :, None, None]
    h = (cell.long() + bits) * m                                                # [3, L', N, 8]
    w = torch.where(bits == 1, w_hi, 1 - w_hi)                                  # [3, L', N, 8]
    if mask is None:
        idx = h[0] + h[1] + h[2]
        if wrap is not None:
            idx = idx % wrap[:, None, None]
    else:
        idx = (h[0] ^ h[1] ^ h[2]) & mask
    return idx + offsets[:, None, None], w[0] * w[1] * w[2]


def _encode_torch(x: Tensor, table: Tensor, lattice, mult, dense, offsets, mask: int,
                  wrap: Tensor | None = None) -> Tensor:
    """Plain-autograd encoding: x [N, 3] -> [L, N, F] (the simple twin; also the compiled path)."""
    out = None
    for idx, w in _corners(x, lattice, mult, dense, offsets, mask, wrap):
        v = table.index_select(0, idx.reshape(-1)).view(*idx.shape, table.shape[1])  # [L, N, F]
        v = v * w[..., None].to(table.dtype)
        out = v if out is None else out + v
    return out


class _HashGridFunction(torch.autograd.Function):
    """(x [N, 3], table [M, F]) -> [L, N, F]; gradient for the table, and for x when x requires
    it (``--pose-opt``: ``_position_grad_eager``).

    scales, cell_max [L] float and wrap [L] int64 or None describe the lattice (``_position``);
    meta = (num_dense_levels, mask, eager index dtype, shift): Python constants.
    """

    @staticmethod
    def forward(x, table, scales, cell_max, mult, dense, offsets, wrap, meta):
        lattice = (scales, cell_max, meta[3])
        out = table.new_empty(scales.shape[0], x.shape[0], table.shape[1])
        for s in range(0, x.shape[0], EAGER_CHUNK):
            p = slice(s, s + EAGER_CHUNK)
            out[:, p] = _encode_eager(x[p], table, lattice, mult, offsets, wrap, meta)
        return out

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, table, scales, cell_max, mult, dense, offsets, wrap, meta = inputs
        ctx.save_for_backward(x, scales, cell_max, mult, dense, offsets, wrap,
                              table if x.requires_grad else None)
        ctx.meta, ctx.table_shape = meta, table.shape

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        """grad_out [L, N, F] -> (grad_x [N, 3] or None, grad_table [M, F]), recomputing
        indices and weights from x."""
        x, scales, cell_max, mult, dense, offsets, wrap, table = ctx.saved_tensors
        grad_table = grad_out.new_zeros(ctx.table_shape)
        lattice = (scales, cell_max, ctx.meta[3])
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = _position_grad_eager(x, grad_out, table, lattice, mult, offsets, wrap,
                                          ctx.meta)
        return grad_x, _table_grad_eager(x, grad_out, lattice, mult, offsets, wrap, ctx.meta,
                                         grad_table), *(None,) * 7


class _HashGridTraceable(_HashGridFunction):
    """``_HashGridFunction`` written for ``torch.compile`` (what ``hashgrid_fast`` compiles,
    and what ``HashGrid.forward`` calls when dynamo traces it inside a compiled caller): same
    inputs and outputs, no graph breaks. A class of its own, chosen with the thread-local
    ``torch.compiler.is_dynamo_compiling()``, not a branch on ``torch.compiler.is_compiling()``
    inside one function: that flag is process-wide, so while a background thread compiled,
    eager calls on other threads took the traceable branch (and failed on empty batches)."""

    @staticmethod
    def forward(x, table, scales, cell_max, mult, dense, offsets, wrap, meta):
        lattice = (scales, cell_max, meta[3])
        return _encode_torch(x, table, lattice, mult, dense, offsets, meta[1], wrap)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        """One fused loop of atomic adds per level: level by level (cache locality), with
        nothing [L, N, 8]-sized stored. Measured 1.3-1.7x faster than one loop over all levels
        or one per corner, and on par with calling _table_grad_eager as a custom op."""
        x, scales, cell_max, mult, dense, offsets, wrap, _ = ctx.saved_tensors
        nd, mask, _, shift = ctx.meta
        grad_table = grad_out.new_zeros(ctx.table_shape)
        for lv in range(scales.shape[0]):
            s = slice(lv, lv + 1)
            dense_lv = lv < nd
            idx, w = _corner_grid(x, (scales[s], cell_max[s], shift), mult[:, s], offsets[s],
                                  None if dense_lv else mask,
                                  wrap[s] if dense_lv and wrap is not None else None)
            values = grad_out[s, :, None, :] * w[..., None].to(grad_out.dtype)
            grad_table.index_put_((idx,), values, accumulate=True)
        return None, grad_table, *(None,) * 7


class HashGrid(nn.Module):
    """Multiresolution hash encoding: x [N, 3] in [0, 1] -> features [N, L * F].

    ``impl="fused"`` (default) uses the custom autograd function, ``impl="torch"`` the plain
    autograd twin; both give the same values and table gradients. On a CUDA device the fused
    path runs through tiny-cuda-nn (``config.backend``, tcnn convention only) or is compiled
    with torch.compile (``config.compile``); either falls back to eager torch with one warning.
    """

    def __init__(self, config: HashGridConfig, impl: str = "fused"):
        super().__init__()
        if impl not in ("fused", "torch"):
            raise ValueError(f"impl must be 'fused' or 'torch', not {impl!r}")
        config.check()
        self.config, self.impl = config, impl
        L, F, T = config.num_levels, config.features_per_level, config.log2_table_size
        lay = _level_layout(config)
        offsets, dense, verts = lay["offsets"], lay["dense"], lay["verts"]
        self.out_dim = L * F
        self.num_dense_levels = sum(dense)
        self.mask = 2**T - 1
        self.table = nn.Parameter(torch.empty(offsets[-1], F).uniform_(-1e-4, 1e-4))
        """[sum entries, F] all levels' tables, level l at rows offsets[l]:offsets[l+1] (with
        the tcnn convention this is tiny-cuda-nn's parameter vector, viewed as rows)."""
        mult = [[1, v, v * v] if d else list(PRIMES) for v, d in zip(verts, dense)]
        self.register_buffer("scales", torch.tensor(lay["scales"], dtype=torch.float32), False)
        self.register_buffer("cell_max", torch.tensor(lay["cell_max"], dtype=torch.float32),
                             False)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.int64), False)
        self.register_buffer("dense", torch.tensor(dense), False)
        self.register_buffer("mult", torch.tensor(mult, dtype=torch.int64).t().contiguous(), False)
        wrap = None if lay["wrap"] is None else torch.tensor(lay["wrap"], dtype=torch.int64)
        self.register_buffer("wrap", wrap, False)
        self.shift = lay["shift"]
        fits32 = (max(verts) + 1) * 2**T < 2**31 and offsets[-1] < 2**31
        self._meta = (self.num_dense_levels, self.mask, torch.int32 if fits32 else torch.int64,
                      self.shift)
        self._fast: dict[str, object] = {}
        """device type -> the accelerated callable chosen for it (None: eager torch)."""

    def forward(self, x: Tensor) -> Tensor:
        """x [N, 3] in [0, 1] (clamped) -> [N, out_dim] in the table's dtype, level-major."""
        x = x.to(self.scales.dtype)
        # Positions to differentiate (--pose-opt asks, nothing else does) take the eager fused
        # function, which computes their gradient too (no accelerated path does), or the
        # plain-autograd twin while dynamo traces a compiled caller.
        wants_dx = x.requires_grad and torch.is_grad_enabled()
        if wants_dx and self.impl == "fused" and not torch.compiler.is_dynamo_compiling():
            out = _HashGridFunction.apply(x, self.table, *self.fused_args())
            return out.permute(1, 0, 2).reshape(x.shape[0], self.out_dim)
        if self.impl == "torch" or wants_dx:
            out = _encode_torch(x, self.table, (self.scales, self.cell_max, self.shift), self.mult,
                                self.dense, self.offsets[:-1], self.mask, self.wrap)
            return out.permute(1, 0, 2).reshape(x.shape[0], self.out_dim)
        kind = x.device.type
        if kind not in self._fast:
            self._fast[kind] = accelerated(self, x.device)
        infer = None if self._fast[kind] else inference_function(self, x)
        fast = self._fast[kind] or infer
        if fast is not None and getattr(fast, "encodes_whole", False):
            return fast(self.table, x)                    # tiny-cuda-nn: [N, L*F] directly
        if (fast is None and kind == "cpu" and not torch.compiler.is_dynamo_compiling()
                and use_cpu_hashgrid(self.table)):
            return encode_cpu(self, x)                     # compiled C++ loops (hashgrid_cpu)
        if fast is None:   # eager; the traceable twin when dynamo traces a compiled caller
            fast = (_HashGridTraceable.apply if torch.compiler.is_dynamo_compiling()
                    else _HashGridFunction.apply)
        # the compiled inference takes a plain tensor, as it was compiled for: a Parameter
        # would fail its guards and compile it again (~3 s, once per process)
        table = self.table.detach() if infer is not None else self.table
        out = fast(x.detach(), table, *self.fused_args())
        return out.permute(1, 0, 2).reshape(x.shape[0], self.out_dim)   # [L, N, F] -> [N, L*F]

    def fused_args(self) -> tuple:
        """The lattice arguments of ``_HashGridFunction`` after (x, table)."""
        return (self.scales, self.cell_max, self.mult, self.dense, self.offsets[:-1], self.wrap,
                self._meta)

    def extra_repr(self) -> str:
        c = self.config
        return (f"levels={c.num_levels}, features={c.features_per_level}, "
                f"log2_table_size={c.log2_table_size}, resolution={c.base_resolution}.."
                f"{c.max_resolution}, dense_levels={self.num_dense_levels}, "
                f"convention={c.convention!r}, impl={self.impl!r}")
