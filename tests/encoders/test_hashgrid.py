"""Hash-grid encoder: brute-force parity, exact vertices, continuity, compile parity."""
from __future__ import annotations

import shutil

import pytest
import torch

import fieldkit.encoders.hashgrid as hg
from fieldkit.encoders.hashgrid import HashGrid, HashGridConfig
from fieldkit.encoders.hashgrid_reference import hashgrid_reference

# levels 0-1 dense ((N+1)^3 = 125, 343 <= 1024), levels 2-5 hashed
SMALL = HashGridConfig(num_levels=6, features_per_level=2, log2_table_size=10,
                       base_resolution=4, max_resolution=64)
IMPLS = ["fused", "torch"]


def _grid(config: HashGridConfig = SMALL, impl: str = "fused", seed: int = 0) -> HashGrid:
    """A grid with O(1) table values, so that tolerances of 1e-6 mean something."""
    torch.manual_seed(seed)
    grid = HashGrid(config, impl=impl)
    with torch.no_grad():
        grid.table.uniform_(-1.0, 1.0)
    return grid


def _points(n: int, seed: int = 1) -> torch.Tensor:
    """[n, 3] random points plus the corners of the unit cube and a point outside it."""
    g = torch.Generator().manual_seed(seed)
    corners = torch.tensor([[0.0, 0, 0], [1, 1, 1], [1, 0, 0.5], [0, 1, 1], [1.25, -0.5, 0.5]])
    return torch.cat([torch.rand(n, 3, generator=g), corners])


def _reference(grid: HashGrid, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    c = grid.config
    return hashgrid_reference(x, table, grid.offsets, c.resolutions(), c.log2_table_size,
                              c.features_per_level)


def test_layout():
    grid = HashGrid(SMALL)
    assert SMALL.resolutions() == [4, 6, 12, 21, 36, 64]
    assert grid.num_dense_levels == 2 and 0 < grid.num_dense_levels < SMALL.num_levels
    assert grid.offsets.tolist() == [0, 125, 468, 1492, 2516, 3540, 4564]
    assert grid.table.shape == (4564, 2) and grid.out_dim == 12
    assert grid.table.abs().max() <= 1e-4 and grid.table.abs().max() > 0
    default = HashGrid(HashGridConfig())
    res = HashGridConfig().resolutions()
    assert res[0] == 16 and res[-1] == 2048 and default.out_dim == 32
    assert default.table.shape[0] == sum(HashGridConfig().table_sizes())
    with pytest.raises(ValueError):
        HashGrid(SMALL, impl="cuda")


@pytest.mark.parametrize("impl", IMPLS)
def test_matches_reference_values_and_table_grad(impl):
    grid = _grid(impl=impl)
    x = _points(50)
    out = grid(x)
    assert out.shape == (55, 12) and out.dtype == torch.float32

    table = grid.table.detach().clone().requires_grad_(True)
    ref = _reference(grid, x, table)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)

    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    out.backward(upstream)
    ref.backward(upstream)
    torch.testing.assert_close(grid.table.grad, table.grad, atol=1e-6, rtol=0)


@pytest.mark.parametrize("threads", [1, 3])
def test_fused_matches_torch_twin_in_chunks(monkeypatch, threads):
    """16 levels, several eager blocks, 1 or 3 scatter threads: fused == plain autograd."""
    monkeypatch.setattr(hg, "EAGER_CHUNK", 1000)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    x = torch.rand(2500, 3, generator=torch.Generator().manual_seed(3))
    upstream = torch.randn(2500, 32, generator=torch.Generator().manual_seed(4))
    config = HashGridConfig(log2_table_size=14)
    grids = [_grid(config, impl) for impl in IMPLS]
    outs = [g(x) for g in grids]
    torch.testing.assert_close(outs[0], outs[1], atol=1e-6, rtol=0)
    for g, out in zip(grids, outs):
        out.backward(upstream)
    torch.testing.assert_close(grids[0].table.grad, grids[1].table.grad, atol=1e-5, rtol=1e-6)


def test_int64_index_path_for_large_tables():
    """(N + 1) * 2**T >= 2**31: the eager path falls back to int64 index arithmetic."""
    config = HashGridConfig(num_levels=2, log2_table_size=20, base_resolution=2048,
                            max_resolution=4096)
    grid = _grid(config)
    assert grid._meta[2] == torch.int64 and grid.num_dense_levels == 0
    x = _points(20)
    table = grid.table.detach().clone().requires_grad_(True)
    out, ref = grid(x), _reference(grid, x, table)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    out.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(grid.table.grad, table.grad, atol=1e-6, rtol=0)


@pytest.mark.parametrize("level", [0, 5])   # dense, hashed
def test_exact_at_grid_vertices(level):
    grid = _grid()
    n, T = SMALL.resolutions()[level], SMALL.log2_table_size
    g = torch.Generator().manual_seed(5)
    v = torch.randint(0, n + 1, (40, 3), generator=g)
    v[:4] = torch.tensor([[0, 0, 0], [n, n, n], [n, 0, 1], [1, n, 0]])
    x = v.float() / n                                   # exact: n is a power of two
    out = grid(x).view(-1, SMALL.num_levels, 2)[:, level]
    if level < grid.num_dense_levels:
        i = v[:, 0] + v[:, 1] * (n + 1) + v[:, 2] * (n + 1) ** 2
    else:
        i = (v[:, 0] ^ v[:, 1] * 2654435761 ^ v[:, 2] * 805459861) % 2**T
    expected = grid.table.detach()[int(grid.offsets[level]) + i]
    torch.testing.assert_close(out, expected, atol=1e-7, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_continuous_across_cell_boundaries(impl):
    grid = _grid(impl=impl)
    g = torch.Generator().manual_seed(6)
    eps = 1e-5
    for level, n in enumerate(SMALL.resolutions()):
        x = torch.rand(20, 3, generator=g)
        axis = level % 3
        x[:, axis] = torch.randint(1, n, (20,), generator=g).float() / n   # on a cell face
        lo, hi = x.clone(), x.clone()
        lo[:, axis] -= eps
        hi[:, axis] += eps
        jump = (grid(hi) - grid(lo)).abs().max().item()
        # slope <= 2 max|table| * N_max per unit; a discontinuity would be O(1)
        assert jump < 2 * 64 * 2 * eps * 1.5, (level, jump)
    # inputs are clamped to [0, 1]
    torch.testing.assert_close(grid(torch.tensor([[1.5, -0.25, 0.5]])),
                               grid(torch.tensor([[1.0, 0.0, 0.5]])))


def test_shapes_dtypes_and_input_grad_only_when_asked():
    grid = _grid()
    assert grid(torch.rand(0, 3)).shape == (0, 12)
    out = grid(torch.rand(7, 3, dtype=torch.float64))
    assert out.shape == (7, 12) and out.dtype == torch.float32
    x = torch.rand(7, 3, requires_grad=True)   # positions that require it get a gradient
    grid(x).sum().backward()                   # (--pose-opt; tests/train/test_pose_opt.py)
    assert x.grad is not None and x.grad.abs().sum() > 0 and grid.table.grad is not None


def _compile_or_skip(module):
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("torch.compile on CPU needs a C++ compiler (g++/c++ not found)")
    try:
        return torch.compile(module, fullgraph=True)
    except Exception as e:  # pragma: no cover - platform without dynamo support
        pytest.skip(f"torch.compile unavailable: {e}")


def test_compile_matches_eager():
    grid = _grid()
    x = _points(200)
    upstream = torch.randn(205, 12, generator=torch.Generator().manual_seed(7))
    eager = grid(x)
    eager.backward(upstream)
    eager_grad = grid.table.grad.clone()
    grid.table.grad = None

    compiled = _compile_or_skip(grid)
    out = compiled(x)
    torch.testing.assert_close(out, eager, atol=1e-6, rtol=0)
    out.backward(upstream)
    torch.testing.assert_close(grid.table.grad, eager_grad, atol=1e-6, rtol=0)
