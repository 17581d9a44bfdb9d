"""Gaussian blending compiled for the CPU: the C++ twin of ``splat.composite``.

``splat.composite`` expands every (Gaussian, pixel) pair into tensors and lets autograd
differentiate ~60 passes over them; each pass over 10^7 pairs costs ~5 ms whoever writes it
in torch (``apps/results/splat_raster_cpu.md``). Here C++ loops blend each tile's Gaussians
front to back over the rows of their ellipses (``csrc/splat_blend.cpp``; the torch path's
chords), and the backward walks them back to front with 3DGS's closed-form gradients, the
tiles dealt out to ATen's threads in a fixed order (the gradients are the same from run to
run). The pairs, thresholds and stop are ``splat.composite``'s; tests hold the two together,
forward and backward. No (Gaussian, pixel) pair is ever stored, so memory does not grow with
the image or the Gaussians' overlap. Built with OpenMP, without which ATen's threads sit
idle: with the chords, training steps 1.7x faster on 2 cores than single-threaded loops over
whole pixel boxes (``apps/results/splat_cpu_blend_threads``).

The same extension projects the Gaussians (``splat_cpu_project``, ``csrc/splat_project.cpp``).
The extension is built on first use with ``torch.utils.cpp_extension`` (g++ and ninja; ~40 s
once per machine, cached in torch's extension folder, ``TORCH_EXTENSIONS_DIR``). Where that
fails, or with ``FIELDKIT_CPU_BLEND=off``, ``cpu_blend_status`` says why and the pure-torch
path renders; ``--splat.render.backend torch`` asks for that path.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import Tensor

from fieldkit.cpu_extensions import cpu_extension_status, load_cpu_extension
from fieldkit.render.splat import Projection, TileBins, bin_tiles, finish, pixel_boxes

CSRC = Path(__file__).parent / "csrc"
SOURCES = [CSRC / "splat_blend.cpp", CSRC / "splat_project.cpp", CSRC / "splat_cpu_module.cpp"]
"""The extension: blending, projection (``splat_cpu_project``) and their Python module."""


@functools.lru_cache(maxsize=None)
def _extension():
    return load_cpu_extension("fieldkit_splat_cpu", SOURCES)


def _smoke_test() -> None:
    """Project and blend two overlapping Gaussians with the extension and with the torch
    path (``splat.project``, ``splat.composite``): images and gradients."""
    from fieldkit.render.splat import composite, project
    from fieldkit.render.splat_cpu_project import project_cpu

    means = torch.tensor([[0.0, 0.0, 2.0], [0.1, -0.1, 3.0]], requires_grad=True)
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 2)
    scales = torch.full((2, 3), 0.2)
    opacities = torch.tensor([0.8, 0.6])
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], requires_grad=True)
    K = torch.tensor([[16.0, 0.0, 8.0], [0.0, 16.0, 8.0], [0.0, 0.0, 1.0]])
    ref_proj = project(means, quats, scales, opacities, torch.eye(4), K, 20, 18)
    proj = project_cpu(means, quats, scales, opacities, torch.eye(4), K, 20, 18)
    bins = bin_tiles(ref_proj, 20, 18)
    ours = blend_sums(proj, bins, colors, 20, 18)
    ref = composite(ref_proj, bins, colors, 20, 18)
    grads = torch.autograd.grad(ours[:, :3].sum(), (colors, means))
    wants = torch.autograd.grad(ref["rgb"].sum(), (colors, means))
    if not (torch.equal(proj.radii, ref_proj.radii)
            and torch.allclose(ours[:, :3].reshape(18, 20, 3), ref["rgb"], atol=1e-5)
            and all(torch.allclose(g, w, atol=1e-4) for g, w in zip(grads, wants))):
        raise RuntimeError("the compiled projection and blending do not match the torch ones")


@functools.lru_cache(maxsize=None)
def cpu_blend_status() -> tuple[bool, str]:
    """(ok, one-line reason): whether splats blend with the compiled C++ loops on the CPU."""
    return cpu_extension_status("FIELDKIT_CPU_BLEND", "the CPU splat blending", 40, _extension,
                                _smoke_test, "splats blend with compiled C++ loops on the CPU"
                                " (built once per machine)")


def use_cpu_blend(requested: str, like: Tensor) -> bool:
    """Whether a splat render of ``like``'s device and dtype, with ``requested`` as its
    backend (``SplatRenderConfig.backend``), blends with the compiled loops: "auto", float32
    tensors on the CPU, and the extension usable."""
    return (requested == "auto" and like.device.type == "cpu" and like.dtype == torch.float32
            and cpu_blend_status()[0])


class _Blend(torch.autograd.Function):
    @staticmethod
    def forward(ctx, per_gaussian: Tensor, gaussian: Tensor, offsets: Tensor, box: Tensor,
                geometry: tuple[int, int, int, int]) -> Tensor:
        sums, last, t_final = _extension().forward(per_gaussian, gaussian, offsets, box,
                                                   *geometry)
        ctx.save_for_backward(per_gaussian, gaussian, offsets, box, last, t_final)
        ctx.geometry = geometry
        return sums

    @staticmethod
    def backward(ctx, grad_sums: Tensor):
        per_gaussian, gaussian, offsets, box, last, t_final = ctx.saved_tensors
        grad = _extension().backward(grad_sums.contiguous(), per_gaussian, gaussian, offsets,
                                     box, last, t_final, *ctx.geometry)
        return grad, None, None, None, None


def blend_sums(proj: Projection, bins: TileBins, colors: Tensor, width: int, height: int
               ) -> Tensor:
    """[H * W, D + 2] float32 per-pixel sums of weighted colour, weight and weighted depth
    of the binned Gaussians (``splat.finish`` makes the images); differentiable."""
    per_gaussian = torch.cat([proj.means2d, proj.conics, proj.opacities[:, None],
                              proj.depths[:, None], colors], 1).float().contiguous()
    box = pixel_boxes(proj, width, height).contiguous()
    geometry = (bins.tiles_x, bins.tile_size, width, height)
    return _Blend.apply(per_gaussian, bins.gaussian.contiguous(), bins.offsets.contiguous(),
                        box, geometry)


def rasterize_cpu(proj: Projection, colors: Tensor, width: int, height: int,
                  background: Tensor | None, tile_size: int) -> dict[str, Tensor]:
    """The images of ``splat.composite`` (with or without gradients) from the compiled
    loops: "rgb" [H, W, D], "depth" [H, W, 1], "alpha" [H, W, 1]."""
    bins = bin_tiles(proj, width, height, tile_size)
    return finish(blend_sums(proj, bins, colors, width, height), colors.shape[1], width,
                  height, background)
