"""EWA projection compiled for the CPU: the C++ twin of ``splat.project``.

``splat.project`` is ~100 small tensor operations on [N] and [N, 3, 3] tensors (3x3 and 2x3
products as batched matmuls), and autograd about as many again: on lego's ~50k Gaussians ~21 ms
of a ~90 ms training step, most of it per-operation overhead. Here one C++ loop over the
Gaussians does the forward (``csrc/splat_project.cpp``) and one the backward, autograd's
gradients written out (through the same clamps and ``where``s as the torch code). Tests hold
the two together, outputs and gradients, plain and antialiased, with culled and clamped
Gaussians. It runs where the compiled blending runs (``splat_cpu.use_cpu_blend``) and the
camera is fixed; a camera being optimised (``--pose-opt``) is projected by the torch code,
which gives its gradient.
"""
from __future__ import annotations

import torch
from torch import Tensor

from fieldkit.render.splat import EXTENT_MAX, Projection
from fieldkit.render.splat_cpu import _extension


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor,
                viewmat: Tensor, K: Tensor, setting: tuple) -> tuple[Tensor, Tensor]:
        width, height, near, far, eps2d, antialiased = setting
        out, radii = _extension().project_forward(means, quats, scales, opacities, viewmat, K,
                                                  width, height, near, far, eps2d, EXTENT_MAX,
                                                  antialiased)
        ctx.save_for_backward(means, quats, scales, opacities, viewmat, K)
        ctx.setting = setting
        ctx.mark_non_differentiable(radii)
        return out, radii

    @staticmethod
    def backward(ctx, grad_out: Tensor, _grad_radii):
        means, quats, scales, opacities, viewmat, K = ctx.saved_tensors
        grads = _extension().project_backward(grad_out.contiguous(), means, quats, scales,
                                              opacities, viewmat, K, *ctx.setting)
        return (*grads, None, None, None)


def project_cpu(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor,
                viewmat: Tensor, K: Tensor, width: int, height: int, near: float = 0.01,
                far: float = 1e10, eps2d: float = 0.3, antialiased: bool = False
                ) -> Projection:
    """``splat.project`` (same arguments, float32 CPU tensors), compiled; differentiable in
    means [N, 3], quats [N, 4], scales [N, 3] and opacities [N], not in viewmat or K."""
    args = [t.detach().float().contiguous() if i >= 4 else t.float().contiguous()
            for i, t in enumerate((means, quats, scales, opacities, viewmat, K))]
    out, radii = _Project.apply(*args, (int(width), int(height), float(near), float(far),
                                        float(eps2d), bool(antialiased)))
    return Projection(out[:, 0:2], out[:, 2:5], out[:, 6], radii, out[:, 5])

