"""Total variation of feature planes, with its gradient in closed form.

``plane_tv(planes)`` is the tri-plane's smoothness penalty (``TriPlane.total_variation``):
for every ``[3, F, R, R]`` parameter of the list, the mean squared difference between
neighbouring texels along rows plus the one along columns, averaged over the 3 planes, then
over the list. ``plane_tv_reference`` is the same value written with plain autograd ops; it
is the test reference.

Why a custom function: through autograd, each difference ``P[:, :, 1:] - P[:, :, :-1]`` costs
its backward two full-size zero-filled tensors (one per slice) plus the square's and the
mean's temporaries. On a 2-core CPU that made the penalty ~30 ms of a ~80 ms tri-plane
student step (8 channels, 256^2 finest planes), more than the four ``grid_sample`` backwards.
Here the forward computes the value and the gradient in one pass over each plane (the
gradient is linear in the planes: ``2 c (2 P[i] - P[i-1] - P[i+1])`` along each axis, one
fewer term at the borders), and the backward only scales the stored gradient.
(``apps/bench_step_cpu.py``, ``apps/results/step_cpu.md``.)
"""
from __future__ import annotations

import torch
from torch import Tensor


def plane_tv_reference(planes: list[Tensor]) -> Tensor:
    """Scalar: mean over the list and the 3 planes of ``mean(d_row**2) + mean(d_col**2)``,
    each plane ``[3, F, R, R]``; plain autograd ops."""
    per_scale = []
    for p in planes:                                                  # [3, F, R, R]
        d_row = p[:, :, 1:, :] - p[:, :, :-1, :]                      # [3, F, R-1, R]
        d_col = p[:, :, :, 1:] - p[:, :, :, :-1]                      # [3, F, R, R-1]
        dims = (1, 2, 3)
        per_scale.append(d_row.square().mean(dims) + d_col.square().mean(dims))   # [3]
    return torch.stack(per_scale).mean()


def _axis_diff_(p: Tensor, grad: Tensor | None, dim: int) -> Tensor:
    """Sum of squared neighbour differences of ``p`` [3, F, R, R] along ``dim``;
    adds ``d[i-1] - d[i]`` (the difference's share of d/dP of the sum, halved) into ``grad``."""
    n = p.shape[dim]
    d = p.narrow(dim, 1, n - 1) - p.narrow(dim, 0, n - 1)             # contiguous, [.., R-1, ..]
    flat = d.reshape(-1)
    total = torch.dot(flat, flat)
    if grad is not None:
        grad.narrow(dim, 1, n - 1).add_(d)
        grad.narrow(dim, 0, n - 1).sub_(d)
    return total


class _PlaneTV(torch.autograd.Function):
    @staticmethod
    def forward(ctx, *planes: Tensor) -> Tensor:
        want_grad = any(ctx.needs_input_grad)
        # sums in float32 at least (float64 planes keep float64)
        dtype = torch.promote_types(planes[0].dtype, torch.float32)
        value = planes[0].new_zeros((), dtype=dtype)
        grads = []
        for p in planes:
            q = p.detach().to(dtype)
            count = q.shape[0] * q.shape[1] * q.shape[2] * (q.shape[3] - 1)   # per axis, R(R-1)
            # value = sum over planes and list of (rows + cols) / (F R ), averaged over
            # 3 planes and len(planes) scales: one weight for every squared difference
            weight = 1.0 / (count * len(planes))
            g = torch.zeros_like(q) if want_grad else None
            total = _axis_diff_(q, g, 2) + _axis_diff_(q, g, 3)
            value = value + total * weight
            if g is not None:
                grads.append(g.mul_(2 * weight).to(p.dtype))
        ctx.save_for_backward(*grads)
        return value.to(planes[0].dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        return tuple(g * grad_out.to(g.dtype) for g in ctx.saved_tensors)


def plane_tv(planes: list[Tensor]) -> Tensor:
    """Scalar total variation of ``planes`` (each ``[3, F, R, R]``, R >= 2), equal to
    ``plane_tv_reference`` (sums in float32, or float64 for float64 planes); differentiable
    with respect to every plane."""
    return _PlaneTV.apply(*planes)
