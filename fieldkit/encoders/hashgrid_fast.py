"""Accelerated hash-grid paths and the choice between them: tiny-cuda-nn or torch.compile.

``HashGrid`` asks ``accelerated(grid, device)`` once per device type. The answer is

- a tiny-cuda-nn encoding (``hashgrid_tcnn.TcnnEncoding``) when ``config.backend`` allows it,
  the grid uses the tcnn convention and tcnn runs on this GPU;
- else a ``torch.compile``d ``_HashGridTraceable`` (Triton kernels on a GPU) when
  ``config.compile`` says so (``auto``: on CUDA only) and a smoke test of forward and backward
  compiles and matches eager;
- else None: the eager torch path.

A failure on the way warns once per reason (``FieldkitWarning``) and falls back; nothing here
ever stops a run that the eager path could do.
"""
from __future__ import annotations

import functools
import warnings

import torch

from fieldkit.errors import FieldkitError, FieldkitWarning
from fieldkit.render.backends import run_with_gradients

_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, FieldkitWarning, stacklevel=4)


@functools.lru_cache(maxsize=None)
def _compiled_function():
    """``_HashGridTraceable.apply`` compiled once per process (dynamic batch sizes)."""
    from fieldkit.encoders.hashgrid import _HashGridTraceable

    return torch.compile(_HashGridTraceable.apply, dynamic=True)


def _compile_smoke_test(grid, device: torch.device) -> None:
    """Compile, then check forward and backward on 64 points against eager (raises if not)."""
    from fieldkit.encoders.hashgrid import _HashGridFunction

    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(64, 3, generator=g).to(device)
    table = grid.table.detach().clone().requires_grad_(True)
    up = torch.randn(grid.config.num_levels, 64, grid.config.features_per_level, generator=g)
    up = up.to(device)
    outs, grads = [], []
    for fn in (_compiled_function(), _HashGridFunction.apply):
        table.grad = None
        out = fn(x, table, *grid.fused_args())
        out.backward(up)
        outs.append(out.detach())
        grads.append(table.grad.clone())
    # eager and compiled sum the 8 corners in a different order: float32 rounding only
    if not (torch.allclose(outs[0], outs[1], atol=1e-5) and
            torch.allclose(grads[0], grads[1], atol=1e-5)):
        raise RuntimeError("the compiled encoding does not match the eager one")


def use_compile(setting: str, device: torch.device) -> bool:
    """Whether ``HashGridConfig.compile`` asks for torch.compile on ``device``."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def accelerated(grid, device: torch.device):
    """The fast callable for ``grid`` on ``device``, or None for the eager torch path."""
    from fieldkit.encoders.hashgrid_tcnn import TcnnEncoding, choose_hashgrid_backend

    config = grid.config
    if choose_hashgrid_backend(config.backend, device, config.convention) == "tcnn":
        try:
            return TcnnEncoding(config, grid.table.numel(), device)
        except FieldkitError:
            raise
        except Exception as err:  # a tcnn that imports but cannot build this encoding
            _warn_once("tcnn-build", f"tiny-cuda-nn could not build the hash grid ({err}); "
                       "using the torch twin instead")
    if not use_compile(config.compile, device):
        return None
    try:
        run_with_gradients(lambda: _compile_smoke_test(grid, device))   # may be a render's
    except Exception as err:  # no Triton, no C++ compiler, a dynamo limitation, ...
        text = " ".join(str(err).split())[:160]
        _warn_once(f"compile-{device.type}", f"torch.compile of the hash grid failed on "
                   f"{device.type} ({type(err).__name__}: {text}); using eager torch instead "
                   "(set --hashgrid.encoder.compile off to skip the attempt)")
        return None
    return _compiled_function()


# ---------------------------------------------------------------------- CPU inference
INFER_MIN_POINTS = 64
"""Smaller no-grad batches stay eager (no recompilation for tiny or 0/1-sized batches)."""

_INFER_READY: dict[tuple, object] = {}
"""Grid layout -> "compiling", True (compiled and checked) or False (failed). The compiled
function serves every grid of a layout: copies, snapshots, a second model."""
_INFER_QUEUE = None
"""Compilations waiting for the background worker: (grid, layout, Future)."""
_INFER_FUTURES: list = []


def _layout(grid) -> tuple:
    return (tuple(grid.table.shape), grid.table.dtype, grid._meta, grid.wrap is None)


def cpu_compile_status() -> tuple[bool, str]:
    """(usable, reason): whether hash grids can be compiled for CPU rendering here."""
    from fieldkit.render.backends import has_cxx_compiler, switched_off

    if switched_off("FIELDKIT_CPU_COMPILE"):
        return False, "FIELDKIT_CPU_COMPILE is off"
    if not has_cxx_compiler():
        return False, "no C++ compiler (g++) for torch.compile on the CPU"
    return True, "rendering compiles the hash grid with torch.compile (once per process)"


def _infer_disabled(grid) -> str | None:
    """Why CPU inference compilation is off for ``grid``, or None."""
    usable, reason = cpu_compile_status()
    if not usable:
        return reason
    if grid.table.device.type != "cpu":
        return "the grid is not on the CPU"
    if grid.config.compile == "off":
        return "the grid's compile setting is off"
    if grid.impl != "fused":
        return "the grid uses the plain-autograd twin"
    return None


@torch.no_grad()
def _warm_inference(grid, key: tuple) -> None:
    """Compile the no-grad forward for ``grid``'s layout and check it against eager."""
    from fieldkit.encoders.hashgrid import _HashGridFunction

    try:
        fn = _compiled_function()
        table = grid.table.detach().to("cpu", copy=True)
        rest = tuple(a.cpu() if torch.is_tensor(a) else a for a in grid.fused_args())
        for n in (257, 64):   # two sizes: the graph is compiled for any batch size
            x = torch.rand(n, 3, generator=torch.Generator().manual_seed(n))
            if not torch.allclose(fn(x, table, *rest), _HashGridFunction.apply(x, table, *rest),
                                  atol=1e-5):
                raise RuntimeError("the compiled encoding does not match the eager one")
        _INFER_READY[key] = True
    except Exception as err:  # no compiler, a dynamo limitation, ...
        _INFER_READY[key] = False
        text = " ".join(str(err).split())[:160]
        _warn_once("compile-infer", f"torch.compile of the hash grid for CPU rendering failed "
                   f"({type(err).__name__}: {text}); rendering with eager torch instead (set "
                   "FIELDKIT_CPU_COMPILE=off to skip the attempt)")


def compile_for_inference(model: torch.nn.Module, background: bool = False) -> list:
    """Compile the forward without gradients of every hash grid in ``model`` for the CPU.

    The compiled forward fuses the 8 corners of every level into one loop, 3x faster than the
    eager path at 2^15-2^17 points (apps/results/cpu_render.md), for a one-off compilation
    per process and grid layout (~25 s on a machine's first run, ~5 s from torch's on-disk
    cache). The viewer and long video renders ask for it, evaluation and a distillation's
    teacher views when it pays (``compile_if_it_pays``); the pass with gradients of training
    keeps its own path either way. Until a
    grid is ready, and wherever compilation fails (one warning), rendering runs eagerly:
    nothing waits on it.

    Args:
        background: compile in a worker thread (the viewer: frames render eagerly meanwhile);
            else compile now.
    Returns:
        The layouts it compiles for (none when switched off: ``FIELDKIT_CPU_COMPILE=off``,
        the grid's ``compile`` set to off, or no C++ compiler; none already asked for).
    """
    from fieldkit.encoders.hashgrid import HashGrid

    keys = []
    for grid in model.modules():
        if not isinstance(grid, HashGrid) or _infer_disabled(grid) is not None:
            continue
        key = _layout(grid)
        if key in _INFER_READY:
            continue
        _INFER_READY[key] = "compiling"
        keys.append(key)
        if background:
            _INFER_FUTURES.append(_submit(grid, key))
        else:
            _warm_inference(grid, key)
    return keys


COMPILE_PAYS_SECONDS = 60.0
"""Eager hash-grid renders of at least this many seconds ahead pay for compiling first. The
compiled encoder saves 30-35% of a view (fox's hash grid at 135 x 240: 2.38 -> 1.66 s, lego's
at 200 x 200: 0.93 -> 0.60 s); the compilation takes ~25 s on a machine's first run and ~5 s
once torch's on-disk cache holds it (apps/results/compile_renders_cpu)."""


def compile_if_it_pays(model: torch.nn.Module, seconds_ahead: float) -> bool:
    """``compile_for_inference(model)`` now when the renders ahead, at the eager speed, would
    take at least ``COMPILE_PAYS_SECONDS``. True when a compilation was made."""
    if seconds_ahead < COMPILE_PAYS_SECONDS:
        return False
    return bool(compile_for_inference(model))


def _submit(grid, key: tuple):
    """Queue a compilation for the one background worker, a daemon thread: Ctrl-C or the end
    of the program never waits for a compilation in progress (a thread pool's would)."""
    global _INFER_QUEUE
    import queue
    import threading
    from concurrent.futures import Future

    if _INFER_QUEUE is None:
        _INFER_QUEUE = queue.Queue()

        def work() -> None:
            while True:
                g, k, done = _INFER_QUEUE.get()
                try:
                    _warm_inference(g, k)
                finally:
                    done.set_result(None)

        threading.Thread(target=work, name="hashgrid-compile", daemon=True).start()
    done = Future()
    _INFER_QUEUE.put((grid, key, done))
    return done


def wait_for_inference_compile(timeout: float | None = None) -> bool:
    """Wait for background compilations (benchmarks, tests); True when none is left."""
    from concurrent.futures import wait

    return not wait(list(_INFER_FUTURES), timeout=timeout).not_done


def inference_function(grid, x: torch.Tensor):
    """The compiled no-grad forward for ``grid`` at ``x``, or None (eager)."""
    if (x.device.type == "cpu" and x.shape[0] >= INFER_MIN_POINTS
            and not torch.is_grad_enabled() and _INFER_READY.get(_layout(grid)) is True):
        return _compiled_function()
    return None
