"""The compiled CPU hash encoding (``fieldkit/encoders/hashgrid_cpu.py``) against its twin,
the plain-autograd torch encoding (``impl="torch"``): values and table gradients for both
conventions (dense levels, tcnn's wrap, hashed levels), points on and beyond the box's faces;
run-to-run identical gradients; when ``HashGrid`` uses it and when not; and the switch."""
from __future__ import annotations

import os

import pytest
import torch

from fieldkit.encoders import hashgrid_cpu
from fieldkit.encoders.hashgrid import HashGrid, HashGridConfig
from fieldkit.encoders.hashgrid_cpu import encode_cpu


@pytest.fixture(scope="module", autouse=True)
def _built():
    try:
        hashgrid_cpu._extension()
    except Exception as err:   # no g++ / ninja here: the torch path is all there is
        pytest.skip(f"the CPU hash encoding does not build here ({type(err).__name__})")


def _grid(convention: str, seed: int = 0, **kw) -> HashGrid:
    config = HashGridConfig(**{"num_levels": 8, "log2_table_size": 12, "base_resolution": 4,
                               "max_resolution": 256, "convention": convention, **kw})
    grid = HashGrid(config, impl="torch")
    torch.nn.init.uniform_(grid.table, -1, 1, generator=torch.Generator().manual_seed(seed))
    return grid


def _points(n: int, seed: int) -> torch.Tensor:
    """Random points, some on the faces and corners of the unit box and some beyond it."""
    x = torch.rand(n, 3, generator=torch.Generator().manual_seed(seed))
    x[:20] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.5], [-0.2, 1.3, 0.5],
                           [0.5, 0.5, 1.0]]).repeat(4, 1)
    return x


@pytest.mark.parametrize("convention", ["fieldkit", "tcnn"])
@pytest.mark.parametrize("features", [2, 4])
def test_values_and_table_gradients_match_the_torch_encoding(convention, features):
    grid = _grid(convention, features_per_level=features)
    assert 0 < grid.num_dense_levels < grid.config.num_levels      # both kinds of level
    x = _points(5000, 1)
    up = torch.randn(5000, grid.out_dim, generator=torch.Generator().manual_seed(2))
    ours = encode_cpu(grid, x)
    (got,) = torch.autograd.grad((ours * up).sum(), grid.table)
    ref = grid(x)                                                    # impl="torch"
    (want,) = torch.autograd.grad((ref * up).sum(), grid.table)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert int((want != 0).any(-1).sum()) > 1000                     # many rows touched


def test_nan_positions_read_inside_the_table():
    """A NaN position (a degenerate ray) encodes as the box's corner instead of reading
    outside the table."""
    grid = _grid("fieldkit")
    x = _points(50, 6)
    x[7] = float("nan")
    x[9, 1] = float("nan")
    out = encode_cpu(grid, x)
    assert torch.isfinite(out).all()
    corner = x.clone()
    corner[7] = 0.0
    corner[9, 1] = 0.0
    torch.testing.assert_close(out, encode_cpu(grid, corner), atol=0, rtol=0)


def test_gradients_are_the_same_from_run_to_run():
    grid = _grid("tcnn")
    x = _points(20000, 3)
    up = torch.randn(20000, grid.out_dim, generator=torch.Generator().manual_seed(4))
    grads = [torch.autograd.grad((encode_cpu(grid, x) * up).sum(), grid.table)[0]
             for _ in range(3)]
    assert all(torch.equal(grads[0], g) for g in grads[1:])


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one CPU core here")
def test_the_loops_run_on_all_of_atens_threads():
    assert hashgrid_cpu._extension().threads_used() == torch.get_num_threads()


def test_the_grid_encodes_with_it_on_the_cpu_unless_told_not_to(monkeypatch):
    monkeypatch.delenv("FIELDKIT_CPU_HASHGRID", raising=False)
    hashgrid_cpu.cpu_hashgrid_status.cache_clear()
    assert hashgrid_cpu.cpu_hashgrid_status()[0]       # its smoke test before the count
    calls = []
    real = hashgrid_cpu._HashGridCpu.apply
    monkeypatch.setattr(hashgrid_cpu._HashGridCpu, "apply",
                        staticmethod(lambda *a: calls.append(1) or real(*a)))
    try:
        grid = _grid("fieldkit")
        grid.impl = "fused"
        x = _points(300, 5)
        with torch.no_grad():                          # a render's first ask
            fused = grid(x)
        assert calls == [1]
        grid.impl = "torch"
        torch.testing.assert_close(fused, grid(x), atol=1e-5, rtol=1e-5)
        grid.impl = "fused"
        grid(x.clone().requires_grad_(True))           # --pose-opt: the eager function
        assert calls == [1]
        grid.double()
        grid(x.double())                               # float64: the eager function
        assert calls == [1]
        grid.float()
        monkeypatch.setenv("FIELDKIT_CPU_HASHGRID", "off")
        hashgrid_cpu.cpu_hashgrid_status.cache_clear()
        ok, reason = hashgrid_cpu.cpu_hashgrid_status()
        assert not ok and "FIELDKIT_CPU_HASHGRID" in reason
        grid(x)
        assert calls == [1]
    finally:
        hashgrid_cpu.cpu_hashgrid_status.cache_clear()
