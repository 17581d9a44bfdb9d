"""The hash encoding compiled for the CPU: the C++ twin of ``hashgrid._HashGridFunction``.

The eager torch path gathers the 8 corners of every point on every level as [L, n] index
tensors and ``index_select``s the table rows (about a third of a hash-grid training step on
this project's 2-core CPU: lego distillation student, profiled 2026-12-08), then scatters the
gradient back with ``index_add_``. Here one C++ loop per point walks its levels and corners
in registers (``csrc/hashgrid_cpu.cpp``), and the backward scatters level by level, the
levels dealt out to ATen's threads (disjoint rows: no races, the same gradient every run).
The lattice, clamps, tcnn convention and hashing are the torch code's; tests hold the two
together, forward and table gradient (``tests/encoders/test_hashgrid_cpu.py``).

It runs for float32 CPU tables where no other accelerated path was chosen (``hashgrid_fast``)
and positions need no gradient (``--pose-opt`` takes the eager function, which gives it).
Built on first use with ``torch.utils.cpp_extension`` (g++ and ninja, ~30 s once per machine);
where that fails, or with ``FIELDKIT_CPU_HASHGRID=off``, the eager torch path runs and
``cpu_hashgrid_status`` says why.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import Tensor

from fieldkit.cpu_extensions import cpu_extension_status, load_cpu_extension

SOURCE = Path(__file__).parent / "csrc" / "hashgrid_cpu.cpp"


@functools.lru_cache(maxsize=None)
def _extension():
    return load_cpu_extension("fieldkit_hashgrid_cpu", [SOURCE])


class _HashGridCpu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, table: Tensor, lattice: tuple, meta: tuple) -> Tensor:
        out = _extension().forward(x, table, *lattice, *meta)
        ctx.save_for_backward(x)
        ctx.lattice, ctx.meta, ctx.rows = lattice, meta, table.shape[0]
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (x,) = ctx.saved_tensors
        grad = _extension().backward(grad_out.contiguous(), x, ctx.rows, *ctx.lattice,
                                     *ctx.meta)
        return None, grad, None, None


def encode_cpu(grid, x: Tensor) -> Tensor:
    """``grid``'s encoding of x [N, 3] in [0, 1] -> [N, L * F] (level-major), differentiable
    in the table (float32 CPU tensors)."""
    lattice = (grid.scales, grid.cell_max, grid.mult, grid.offsets[:-1],
               grid.wrap if grid.wrap is not None else grid.offsets.new_empty(0))
    meta = (grid.num_dense_levels, grid.mask, float(grid.shift))
    out = _HashGridCpu.apply(x.detach().float().contiguous(), grid.table, lattice, meta)
    return out.reshape(x.shape[0], grid.out_dim)


def _smoke_test() -> None:
    """Encode a few points with a small grid of each convention, compiled and with the torch
    code: values and table gradients."""
    from fieldkit.encoders.hashgrid import HashGrid, HashGridConfig

    g = torch.Generator().manual_seed(0)
    x = torch.rand(300, 3, generator=g)
    up = torch.randn(300, 8, generator=g)
    for convention in ("tcnn", "fieldkit"):
        grid = HashGrid(HashGridConfig(num_levels=4, features_per_level=2, log2_table_size=8,
                                       base_resolution=4, max_resolution=32,
                                       convention=convention), impl="torch")
        torch.nn.init.uniform_(grid.table, -1, 1, generator=g)
        ours = encode_cpu(grid, x)
        (got,) = torch.autograd.grad((ours * up).sum(), grid.table)
        ref = grid(x)
        (want,) = torch.autograd.grad((ref * up).sum(), grid.table)
        if not (torch.allclose(ours, ref, atol=1e-5) and torch.allclose(got, want, atol=1e-4)):
            raise RuntimeError(f"the compiled hash encoding does not match the torch one "
                               f"({convention} convention)")


@functools.lru_cache(maxsize=None)
def cpu_hashgrid_status() -> tuple[bool, str]:
    """(ok, one-line reason): whether hash grids encode with the compiled loops on the CPU."""
    return cpu_extension_status("FIELDKIT_CPU_HASHGRID", "the CPU hash encoding", 30, _extension,
                                _smoke_test, "hash grids encode with compiled C++ loops on the CPU"
                                " (built once per machine)")


def use_cpu_hashgrid(table: Tensor) -> bool:
    """Whether a hash grid whose table is ``table`` encodes with the compiled loops: float32
    on the CPU, and the extension usable."""
    return (table.device.type == "cpu" and table.dtype == torch.float32
            and cpu_hashgrid_status()[0])
