"""Eager kernels of the hash grid's fused path, tuned for CPUs, and the lattice position.

``_position`` maps points to lower vertices and fractions on every level (both conventions).
The eager forward and table gradient work in blocks of ``EAGER_CHUNK`` points with int32 index
arithmetic where it fits, gather and scatter float32 pairs as one complex64 element, and split
the scatter over threads by level (``fieldkit.encoders.hashgrid`` documents the layout).
"""
from __future__ import annotations

import torch
from torch import Tensor


def _position(x: Tensor, lattice: tuple) -> tuple[Tensor, Tensor]:
    """x [N, 3] -> (lower vertex [3, L, N] float, fraction [3, L, N]) on every level.

    ``lattice = (scales [L], cell_max [L], shift)``: pos = x * scale + shift, and the lower
    vertex is ``min(floor(pos), cell_max)`` (fieldkit keeps x = 1 in the last cell; for tcnn
    the clamp never binds).
    """
    scales, cell_max, shift = lattice
    pos = x.clamp(0.0, 1.0).t().contiguous()[:, None, :] * scales[:, None]   # [3, L, N]
    if shift:
        pos = pos + shift
    cell = torch.minimum(pos.floor(), cell_max[:, None])
    return cell, pos - cell


def _corners_eager(x: Tensor, lattice: tuple, mult: Tensor, offsets: Tensor,
                   wrap: Tensor | None, nd: int, mask: int, dtype: torch.dtype):
    """Eager twin of ``_corners``, about 3x less index arithmetic: yield (index [L, n], weight).

    Levels ``:nd`` are dense, the rest hashed (a prefix, as resolutions grow). Hash terms are
    reduced mod 2**T before they are combined (``&`` distributes over ``^``), which lets
    ``dtype=int32`` hold them when (vertices per axis) * 2**T < 2**31; the y-z pairs are shared
    by two corners; dense offsets are folded into the x term (after the modulo by ``wrap``
    when there is one).
    """
    L, n = mult.shape[1], x.shape[0]
    cell, w_hi = _position(x, lattice)                            # [3, L, n]
    w_lo = 1 - w_hi
    m = mult.clone()
    m[:, nd:] &= mask
    m = m.to(dtype)[:, :, None]
    h_lo = cell.to(dtype) * m                                     # [3, L, n]
    h_hi = h_lo + m
    off = offsets.to(dtype)[:, None]
    for h in (h_lo, h_hi):
        h[:, nd:] &= mask
        if wrap is None:
            h[0, :nd] += off[:nd]
    wrap = None if wrap is None else wrap[:nd].to(dtype)[:, None]
    hs, ws = (h_lo, h_hi), (w_lo, w_hi)
    for by, bz in ((0, 0), (1, 0), (0, 1), (1, 1)):
        p = torch.empty(L, n, dtype=dtype, device=x.device)
        torch.add(hs[by][1, :nd], hs[bz][2, :nd], out=p[:nd])
        torch.bitwise_xor(hs[by][1, nd:], hs[bz][2, nd:], out=p[nd:])
        wp = ws[by][1] * ws[bz][2]
        for bx in (0, 1):
            idx = torch.empty_like(p)
            torch.add(hs[bx][0, :nd], p[:nd], out=idx[:nd])
            torch.bitwise_xor(hs[bx][0, nd:], p[nd:], out=idx[nd:])
            if wrap is not None:
                idx[:nd] = idx[:nd] % wrap + off[:nd]
            idx[nd:] += off[nd:]
            yield idx, ws[bx][0] * wp


def _rows(t: Tensor) -> tuple[Tensor, bool]:
    """[M, F] -> ([M] complex64 view, True) for F = 2 float32 (one 8-byte element per row: 2x
    faster index_select / index_add_ in eager), else (t, False)."""
    if t.shape[-1] == 2 and t.dtype == torch.float32 and t.is_contiguous():
        return torch.view_as_complex(t), True
    return t, False


def _encode_eager(x: Tensor, table: Tensor, lattice, mult, offsets, wrap, meta) -> Tensor:
    """Eager forward of one block: x [n, 3] -> [L, n, F], no autograd."""
    rows, packed = _rows(table)
    out = None
    for idx, w in _corners_eager(x, lattice, mult, offsets, wrap, *meta[:3]):
        v = rows.index_select(0, idx.view(-1)).view(*idx.shape, *rows.shape[1:])
        v = v * (w if packed else w[..., None].to(v.dtype))
        out = v if out is None else out.add_(v)
    return torch.view_as_real(out) if packed else out


EAGER_CHUNK = 2**15
"""Points per block in the eager ``fused`` path: keeps the [L, chunk] temporaries in cache and
below glibc's mmap threshold, so they are reused instead of page-faulted on every call
(2.5x faster at 2**18 points than one block)."""


_POOL: dict = {}


def _table_grad_eager(x: Tensor, grad_out: Tensor, lattice, mult, offsets, wrap, meta,
                      grad_table: Tensor) -> Tensor:
    """grad_table [M, F] += scatter of grad_out [L, N, F] (eager, in blocks of EAGER_CHUNK).

    index_add_ runs on one core, so with k > 1 intra-op threads the levels are cut into k runs
    with equal numbers of hashed levels (disjoint table rows: no races), scattered by k Python
    threads (ATen releases the GIL): 1.8x faster scatter on 2 cores.
    """
    rows, packed = _rows(grad_table)
    nd, L = meta[0], mult.shape[1]
    k = max(1, min(torch.get_num_threads(), L - nd)) if x.device.type == "cpu" else 1
    cuts = [0] + [nd + i * (L - nd) // k for i in range(1, k)] + [L]
    groups = [slice(a, b) for a, b in zip(cuts, cuts[1:])]
    if k > 1 and k not in _POOL:
        from concurrent.futures import ThreadPoolExecutor
        _POOL[k] = ThreadPoolExecutor(k, thread_name_prefix="hashgrid-scatter")

    def scatter(lv: slice, corners) -> None:
        for idx, v in corners:
            rows.index_add_(0, idx[lv].reshape(-1), v[lv].reshape(-1, *rows.shape[1:]))

    for s in range(0, x.shape[0], EAGER_CHUNK):
        p = slice(s, s + EAGER_CHUNK)
        g = grad_out[:, p].contiguous()
        g = torch.view_as_complex(g) if packed else g
        corners = [(idx, g * (w if packed else w[..., None].to(g.dtype)))
                   for idx, w in _corners_eager(x[p], lattice, mult, offsets, wrap, *meta[:3])]
        if k == 1:
            scatter(groups[0], corners)
        else:
            for f in [_POOL[k].submit(scatter, lv, corners) for lv in groups]:
                f.result()
    return grad_table


def _position_grad_eager(x: Tensor, grad_out: Tensor, table: Tensor, lattice, mult, offsets,
                         wrap, meta) -> Tensor:
    """x [N, 3], grad_out [L, N, F] -> the positions' gradient [N, 3] (eager, in blocks of
    EAGER_CHUNK): each corner's table row dotted with grad_out, times the derivative of its
    trilinear weight along each axis (+-1 times the other two axes' weights), times the
    level's scale; zero where x was clamped into [0, 1]."""
    scales = lattice[0]
    grad_x = torch.zeros_like(x)
    order = [(bx, by, bz) for by, bz in ((0, 0), (1, 0), (0, 1), (1, 1)) for bx in (0, 1)]
    for s in range(0, x.shape[0], EAGER_CHUNK):
        p = slice(s, s + EAGER_CHUNK)
        xb, g = x[p], grad_out[:, p]
        _, w_hi = _position(xb, lattice)                          # [3, L, n]
        ws = (1 - w_hi, w_hi)
        d = torch.zeros_like(w_hi)
        corners = _corners_eager(xb, lattice, mult, offsets, wrap, *meta[:3])
        for bits, (idx, _) in zip(order, corners):
            v = table.index_select(0, idx.view(-1)).view(*idx.shape, table.shape[1])
            dot = (v * g).sum(-1).to(w_hi.dtype)                   # [L, n]
            w = [ws[b][k] for k, b in enumerate(bits)]
            sign = [1.0 if b else -1.0 for b in bits]
            d[0].add_(dot * w[1] * w[2], alpha=sign[0])
            d[1].add_(dot * w[0] * w[2], alpha=sign[1])
            d[2].add_(dot * w[0] * w[1], alpha=sign[2])
        inside = (xb >= 0) & (xb <= 1)
        grad_x[p] = (d * scales[None, :, None]).sum(1).t().to(x.dtype) * inside
    return grad_x
