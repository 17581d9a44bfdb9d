"""The tcnn convention of the hash grid, tcnn's parameter layout, and the tcnn backend.

tiny-cuda-nn cannot be installed on the CPU machines (nor on the GPU machine, which has no
internet), so the layout is checked in pure torch: the torch twin with ``convention="tcnn"``
against an independent step-by-step transcription of tcnn's kernel
(``hashgrid_reference_tcnn``), and the tcnn glue against a fake ``tinycudann`` module. The test
against the real library runs only where it imports and runs on a GPU.
"""
from __future__ import annotations

import shutil
import sys
import types
from dataclasses import replace

import pytest
import torch

from fieldkit.encoders.hashgrid import HashGrid, HashGridConfig
from fieldkit.encoders.hashgrid_reference import hashgrid_reference_tcnn, tcnn_levels
from fieldkit.encoders.hashgrid_tcnn import (TcnnEncoding, choose_hashgrid_backend,
                                             table_from_tcnn_params, table_to_tcnn_params,
                                             tcnn_encoding_config, tcnn_param_count, tcnn_status)
from fieldkit.errors import FieldkitError

# tcnn lattice of this config (b = 16 ** 0.2): s = 3, 5.96, 11.13, 20.11, 35.57, 63 ->
# res = 4, 7, 13, 22, 37, 64 vertices; levels 0-1 dense (64 and 343 -> 344 rows), 2-5 hashed
SMALL = HashGridConfig(num_levels=6, features_per_level=2, log2_table_size=10,
                       base_resolution=4, max_resolution=64, convention="tcnn")


def _grid(config: HashGridConfig = SMALL, impl: str = "fused") -> HashGrid:
    torch.manual_seed(0)
    grid = HashGrid(config, impl=impl)
    with torch.no_grad():
        grid.table.uniform_(-1.0, 1.0)
    return grid


def _points(n: int, seed: int = 1) -> torch.Tensor:
    """Random points plus cube corners: x = 1 on level 0 (s = 3, an integer) puts the upper
    corner one vertex past the last, where tcnn's dense index wraps around the level."""
    g = torch.Generator().manual_seed(seed)
    corners = torch.tensor([[0.0, 0, 0], [1, 1, 1], [1, 0, 0.5], [0, 1, 1]])
    return torch.cat([torch.rand(n, 3, generator=g), corners])


def _reference(grid: HashGrid, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    c = grid.config
    return hashgrid_reference_tcnn(x, table, c.num_levels, c.features_per_level,
                                   c.log2_table_size, c.base_resolution, c.per_level_scale())


def test_layout_is_tcnns():
    grid = HashGrid(SMALL)
    assert SMALL.resolutions() == [3, 6, 12, 21, 36, 63]          # cells: res - 1
    assert grid.offsets.tolist() == [0, 64, 408, 1432, 2456, 3480, 4504]
    assert grid.num_dense_levels == 2
    assert tcnn_param_count(SMALL) == grid.table.numel() == 4504 * 2
    assert tcnn_param_count(replace(SMALL, convention="fieldkit")) == 4504 * 2
    cfg = tcnn_encoding_config(SMALL)
    assert cfg["otype"] == "HashGrid" and cfg["n_levels"] == 6 and cfg["log2_hashmap_size"] == 10
    assert cfg["per_level_scale"] == pytest.approx(16 ** 0.2)
    # the instant-ngp grid (16 levels, 16..2048, 2^19), counted by hand: levels 0-4 dense with
    # 4096, 12168, 29792, 79512 and 205384 rows, then 11 hashed levels of 2^19 rows, F = 2
    big = HashGridConfig(log2_table_size=19, convention="tcnn")
    assert tcnn_param_count(big) == 12196240


@pytest.mark.parametrize("impl", ["fused", "torch"])
def test_matches_tcnn_kernel_transcription(impl):
    grid = _grid(impl=impl)
    x = _points(60)
    out = grid(x)
    assert out.shape == (64, 12)
    table = grid.table.detach().clone().requires_grad_(True)
    ref = _reference(grid, x, table)
    # the reference sums in float64 after the same float32 positions: float32 rounding only
    torch.testing.assert_close(out, ref, atol=2e-6, rtol=0)
    up = torch.randn(64, 12, generator=torch.Generator().manual_seed(3))
    out.backward(up)
    ref.backward(up)
    torch.testing.assert_close(grid.table.grad, table.grad, atol=2e-6, rtol=0)
    # the wrap-around rows of level 0 do receive gradient from x = (1, 1, 1)
    assert grid.table.grad[20].abs().sum() > 0      # (4 + 4*4 + 4*16) % 64 = 20


def test_conventions_differ_and_the_fieldkit_one_is_unchanged():
    """The convention changes the function (so it must travel with the weights)."""
    a, b = _grid(), _grid(replace(SMALL, convention="fieldkit"))
    assert a.table.shape != b.table.shape or not torch.equal(a(_points(8)), b(_points(8)))
    with pytest.raises(ValueError, match="convention"):
        HashGrid(replace(SMALL, convention="ngp"))


def test_tcnn_params_round_trip_and_errors():
    grid = _grid()
    params = table_to_tcnn_params(grid.table, SMALL)
    assert params.shape == (4504 * 2,) and params.dtype == torch.float32
    # feature f of entry i on level l sits at (offset_l + i) * F + f
    assert params[(408 + 5) * 2 + 1] == grid.table[408 + 5, 1]
    back = table_from_tcnn_params(params.half(), SMALL)
    assert back.shape == grid.table.shape
    torch.testing.assert_close(back, grid.table.detach().half().float())
    assert torch.equal(table_from_tcnn_params(params, SMALL), grid.table.detach())
    with pytest.raises(FieldkitError, match="do not match"):
        table_from_tcnn_params(params[:-2], SMALL)
    with pytest.raises(FieldkitError, match="convention tcnn"):
        table_to_tcnn_params(grid.table, replace(SMALL, convention="fieldkit"))


def _fake_tinycudann(monkeypatch) -> list:
    """A ``tinycudann`` whose Encoding has tcnn's interface (params read at forward) and
    computes with the kernel transcription. Returns the list of encodings it built."""
    built = []

    class Encoding(torch.nn.Module):
        def __init__(self, n_input_dims, encoding_config, seed=1337, dtype=None):
            super().__init__()
            assert n_input_dims == 3 and dtype == torch.float32
            self.cfg = encoding_config
            c = encoding_config
            levels = tcnn_levels(c["n_levels"], c["log2_hashmap_size"], c["base_resolution"],
                                 c["per_level_scale"])
            n = (levels[-1][3] + levels[-1][2]) * c["n_features_per_level"]
            self.params = torch.nn.Parameter(torch.zeros(n))
            built.append(self)

        def forward(self, x):
            c = self.cfg
            table = self.params.reshape(-1, c["n_features_per_level"])
            return hashgrid_reference_tcnn(x, table, c["n_levels"], c["n_features_per_level"],
                                           c["log2_hashmap_size"], c["base_resolution"],
                                           c["per_level_scale"])

    module = types.SimpleNamespace(Encoding=Encoding)
    monkeypatch.setitem(sys.modules, "tinycudann", module)
    monkeypatch.setattr(torch.cuda, "device", lambda d: _NullContext())
    return built


class _NullContext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_tcnn_encoding_reads_our_table_and_returns_its_gradient(monkeypatch):
    built = _fake_tinycudann(monkeypatch)
    grid = _grid()
    enc = TcnnEncoding(SMALL, grid.table.numel(), "cpu")
    assert "params" not in dict(built[0].named_parameters())   # no second copy of the weights
    x = _points(20)
    out = enc(grid.table, x)
    torch.testing.assert_close(out, grid(x), atol=2e-6, rtol=0)
    out.sum().backward()
    assert grid.table.grad is not None and grid.table.grad.abs().sum() > 0
    assert built[0].params is None                              # no reference kept between calls
    with pytest.raises(FieldkitError, match="installed tcnn version differs"):
        TcnnEncoding(SMALL, grid.table.numel() - 2, "cpu")


def test_backend_choice_rules(monkeypatch):
    assert choose_hashgrid_backend("torch", "cpu", "tcnn") == "torch"
    assert choose_hashgrid_backend("auto", "cpu", "tcnn") == "torch"
    assert choose_hashgrid_backend("auto", "cuda", "fieldkit") == "torch"   # quietly
    with pytest.raises(FieldkitError, match="convention tcnn"):
        choose_hashgrid_backend("tcnn", "cpu", "fieldkit")
    tcnn_status.cache_clear()
    try:
        if not tcnn_status()[0]:
            with pytest.raises(FieldkitError, match="tiny-cuda-nn|tcnn"):
                choose_hashgrid_backend("cuda", "cpu", "tcnn")
        with pytest.raises(FieldkitError, match="unknown"):
            choose_hashgrid_backend("fast", "cpu", "tcnn")
    finally:
        tcnn_status.cache_clear()


def test_tcnn_convention_model_trains_saves_and_loads(tmp_path):
    from fieldkit.fields.models import HashGridModel, HashGridModelConfig
    from fieldkit.fields.nerf import VolumeModel

    enc = replace(SMALL, log2_table_size=12)
    model = HashGridModel(HashGridModelConfig(encoder=enc))
    o = torch.tensor([[0.0, 0.0, -2.0]]).repeat(64, 1)
    d = torch.nn.functional.normalize(torch.randn(64, 3) * 0.1 + torch.tensor([0, 0, 1.0]), dim=-1)
    out = model.render_rays(o, d, torch.ones(3))
    out["rgb"].sum().backward()
    assert model.field.encoder.table.grad.abs().sum() > 0
    model.save(tmp_path)
    loaded = VolumeModel.load(tmp_path)
    assert loaded.config.encoder.convention == "tcnn"
    assert torch.equal(loaded.field.encoder.table, model.field.encoder.table)


def test_compiled_tcnn_convention_matches_eager():
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("torch.compile on CPU needs a C++ compiler (g++/c++ not found)")
    grid = _grid(replace(SMALL, compile="on"))
    eager = _grid()
    x = _points(100)
    out = grid(x)
    assert grid._fast["cpu"] is not None, "the compile smoke test failed on this machine"
    torch.testing.assert_close(out, eager(x), atol=1e-5, rtol=0)
    up = torch.randn_like(out)
    out.backward(up)
    eager(x).backward(up)
    # compiled and eager add the 8 corners' contributions in another order
    torch.testing.assert_close(grid.table.grad, eager.table.grad, atol=1e-5, rtol=0)


def test_compile_smoke_test_runs_when_the_first_call_is_under_no_grad(monkeypatch):
    """Rendering (no_grad) may be the first use of a grid: the smoke test's backward must
    still run, not fail and fall back to eager with a warning."""
    import warnings

    from fieldkit.encoders import hashgrid_fast
    from fieldkit.encoders.hashgrid import _HashGridFunction

    calls = []

    def compiled(*args):   # stands in for torch.compile's result (no compiler needed)
        calls.append(torch.is_grad_enabled())
        return _HashGridFunction.apply(*args)

    monkeypatch.setattr(hashgrid_fast, "_compiled_function", lambda: compiled)
    grid = _grid(replace(SMALL, compile="on"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            out = grid(_points(10))
    assert grid._fast["cpu"] is compiled and calls[0] is True
    assert not out.requires_grad


@pytest.mark.skipif(not tcnn_status()[0], reason=f"needs tiny-cuda-nn on CUDA: {tcnn_status()[1]}")
def test_real_tcnn_matches_torch_twin_on_gpu():
    config = replace(SMALL, log2_table_size=14, backend="tcnn")
    grid = _grid(config).cuda()
    twin = _grid(replace(config, backend="torch", compile="off")).cuda()
    x = torch.rand(4096, 3, device="cuda")
    out = grid(x)
    assert grid._fast["cuda"] is not None
    # tcnn uses fmaf and CUDA's exp2f (within 2 ulp): positions differ in the last bit,
    # so values differ at float32 rounding level
    torch.testing.assert_close(out, twin(x), atol=1e-4, rtol=0)
    up = torch.randn_like(out)
    out.backward(up)
    twin(x).backward(up)
    # atomicAdd order on the GPU vs our scatter: float32 sums in another order
    torch.testing.assert_close(grid.table.grad, twin.table.grad, atol=1e-3, rtol=1e-3)
