"""CPU inference compilation of the hash grid (``hashgrid_fast.compile_for_inference``): the
compiled no-grad forward matches eager, training keeps its own path, the background compile
serves eager frames until it is ready, and every switch and failure falls back to eager."""
from __future__ import annotations

import shutil
import threading
import warnings
from dataclasses import replace

import pytest
import torch

from fieldkit.encoders import hashgrid_fast
from fieldkit.encoders.hashgrid import HashGrid, HashGridConfig
from fieldkit.errors import FieldkitWarning

CONFIG = HashGridConfig(num_levels=8, features_per_level=2, log2_table_size=12,
                        base_resolution=4, max_resolution=256)


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch):
    monkeypatch.delenv("FIELDKIT_CPU_COMPILE", raising=False)   # the default: on
    monkeypatch.setattr(hashgrid_fast, "_INFER_READY", {})
    monkeypatch.setattr(hashgrid_fast, "_warned", set())


def _grid(config: HashGridConfig = CONFIG, seed: int = 0) -> HashGrid:
    torch.manual_seed(seed)
    grid = HashGrid(config)
    with torch.no_grad():
        grid.table.uniform_(-1.0, 1.0)
    return grid


def _points(n: int) -> torch.Tensor:
    return torch.rand(n, 3, generator=torch.Generator().manual_seed(7))


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on the CPU needs a C++ compiler (g++ not found)")
def test_compiled_inference_matches_eager_and_training_keeps_its_path():
    grid = _grid()
    model = torch.nn.Sequential(grid)
    x = _points(5000)
    with torch.no_grad():
        eager = grid(x)
    assert hashgrid_fast.compile_for_inference(model) == [hashgrid_fast._layout(grid)]
    assert hashgrid_fast._INFER_READY[hashgrid_fast._layout(grid)] is True
    with torch.no_grad():
        assert hashgrid_fast.inference_function(grid, x) is not None
        compiled = grid(x)
    # the same lattice and table; the 8 corners are summed in another order
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=0)
    # a copy with another table (a snapshot) uses it too, and reads its own table
    other = _grid(seed=1)
    with torch.no_grad():
        assert hashgrid_fast.inference_function(other, x) is not None
        torch.testing.assert_close(other(x), _eager(other, x), atol=1e-5, rtol=0)
    # with gradients: the eager autograd path, table gradients as before
    assert hashgrid_fast.inference_function(grid, x) is None
    out = grid(x)
    assert out.requires_grad
    out.square().sum().backward()
    assert grid.table.grad.abs().sum() > 0
    # small batches stay eager (no recompilation for sizes 0 and 1)
    with torch.no_grad():
        assert hashgrid_fast.inference_function(grid, x[:1]) is None
        assert grid(x[:0]).shape == (0, CONFIG.num_levels * 2)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on the CPU needs a C++ compiler (g++ not found)")
def test_compiles_only_when_it_pays_and_the_grid_parameter_reuses_the_compilation():
    grid = _grid()
    model = torch.nn.Sequential(grid)
    pays = hashgrid_fast.COMPILE_PAYS_SECONDS
    assert not hashgrid_fast.compile_if_it_pays(model, 0.5 * pays)
    assert hashgrid_fast._INFER_READY == {}            # nothing compiled
    torch._dynamo.reset()   # no graph left over from other tests: a recompilation would show
    assert hashgrid_fast.compile_if_it_pays(model, pays)
    assert hashgrid_fast._INFER_READY[hashgrid_fast._layout(grid)] is True
    assert not hashgrid_fast.compile_if_it_pays(model, 10 * pays)   # compiled already
    # the model's table is a Parameter that requires grad, the warm-up's a plain tensor:
    # the grid passes what the compilation was made for, so it is not compiled again
    assert isinstance(grid.table, torch.nn.Parameter) and grid.table.requires_grad
    x = _points(3000)
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
        torch.testing.assert_close(grid(x), _eager(grid, x), atol=1e-5, rtol=0)


def _uncompiled(grid: HashGrid, x: torch.Tensor) -> torch.Tensor:
    """What the grid computes without torch.compile: the C++ loops where they run on the CPU
    (``hashgrid_cpu``), else the eager function."""
    from fieldkit.encoders.hashgrid_cpu import encode_cpu, use_cpu_hashgrid

    if use_cpu_hashgrid(grid.table):
        with torch.no_grad():
            return encode_cpu(grid, x)
    return _eager(grid, x)


def _eager(grid: HashGrid, x: torch.Tensor) -> torch.Tensor:
    from fieldkit.encoders.hashgrid import _HashGridFunction

    with torch.no_grad():
        out = _HashGridFunction.apply(x, grid.table, *grid.fused_args())
    return out.permute(1, 0, 2).reshape(x.shape[0], -1)


def test_background_compile_renders_eagerly_until_ready(monkeypatch):
    release = threading.Event()
    calls = []

    def compiled(*args):   # stands in for torch.compile's result, slow to "compile"
        release.wait(10)
        calls.append(args[0].shape[0])
        from fieldkit.encoders.hashgrid import _HashGridFunction

        return _HashGridFunction.apply(*args)

    monkeypatch.setattr(hashgrid_fast, "_compiled_function", lambda: compiled)
    grid = _grid()
    keys = hashgrid_fast.compile_for_inference(grid, background=True)
    assert hashgrid_fast._INFER_READY[keys[0]] == "compiling"
    with torch.no_grad():
        assert hashgrid_fast.inference_function(grid, _points(100)) is None
        grid(_points(100))                    # eager meanwhile: does not wait
    assert calls == []
    assert hashgrid_fast.compile_for_inference(grid, background=True) == []   # asked once
    assert not hashgrid_fast.wait_for_inference_compile(timeout=0.05)
    # a daemon thread: Ctrl-C and the end of the program do not wait for the compiler
    assert [t.daemon for t in threading.enumerate() if t.name == "hashgrid-compile"] == [True]
    release.set()
    assert hashgrid_fast.wait_for_inference_compile(timeout=10)
    assert hashgrid_fast._INFER_READY[keys[0]] is True
    with torch.no_grad():
        grid(_points(100))
    assert calls[-1] == 100


def test_switches_turn_it_off(monkeypatch):
    grid = _grid()
    monkeypatch.setenv("FIELDKIT_CPU_COMPILE", "off")
    assert hashgrid_fast.compile_for_inference(grid) == []
    monkeypatch.delenv("FIELDKIT_CPU_COMPILE")
    assert hashgrid_fast.compile_for_inference(_grid(replace(CONFIG, compile="off"))) == []
    assert hashgrid_fast.compile_for_inference(HashGrid(CONFIG, impl="torch")) == []
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert hashgrid_fast.compile_for_inference(grid) == []
    assert hashgrid_fast._INFER_READY == {}
    with torch.no_grad():
        assert hashgrid_fast.inference_function(grid, _points(100)) is None


def test_a_failed_compile_warns_once_and_stays_eager(monkeypatch):
    def broken(*args):
        raise RuntimeError("no compiler today")

    monkeypatch.setattr(hashgrid_fast, "_compiled_function", lambda: broken)
    grid = _grid()
    with pytest.warns(FieldkitWarning, match="FIELDKIT_CPU_COMPILE=off"):
        keys = hashgrid_fast.compile_for_inference(grid)
    assert hashgrid_fast._INFER_READY[keys[0]] is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            out = grid(_points(100))
    torch.testing.assert_close(out, _uncompiled(grid, _points(100)), atol=0, rtol=0)


def test_eager_calls_ignore_a_compilation_on_another_thread(monkeypatch):
    """torch.compiler.is_compiling() is process-wide: while a background thread compiles, it
    is True on every thread. The eager path must not read it: same values and gradients as
    without it, and empty batches (rays that hit nothing) still work."""
    grid = _grid()
    x = _points(300)

    def run(n: int):
        grid.table.grad = None
        out = grid(x[:n])
        out.square().sum().backward()
        return out.detach(), grid.table.grad.clone()

    expected = [run(n) for n in (0, 300)]
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    for n, (out, grad) in zip((0, 300), expected):
        got_out, got_grad = run(n)
        assert got_out.shape == (n, CONFIG.num_levels * 2)
        torch.testing.assert_close(got_out, out, atol=0, rtol=0)
        torch.testing.assert_close(got_grad, grad, atol=0, rtol=0)
    with torch.no_grad():
        assert grid(x[:0]).shape == (0, CONFIG.num_levels * 2)
