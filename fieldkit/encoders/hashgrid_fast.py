"""Accelerated hash-grid paths and the choice between them: tiny-cuda-nn or torch.compile.

``HashGrid`` asks ``accelerated(grid, device)`` once per device type. The answer is

- a tiny-cuda-nn encoding (``hashgrid_tcnn.TcnnEncoding``) when ``config.backend`` allows it,
  the grid uses the tcnn convention and tcnn runs on this GPU;
- else a ``torch.compile``d ``_HashGridFunction`` (Triton kernels on a GPU) when
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

_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, FieldkitWarning, stacklevel=4)


@functools.lru_cache(maxsize=None)
def _compiled_function():
    """``_HashGridFunction.apply`` compiled once per process (dynamic batch sizes)."""
    from fieldkit.encoders.hashgrid import _HashGridFunction

    return torch.compile(_HashGridFunction.apply, dynamic=True)


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
        _compile_smoke_test(grid, device)
    except Exception as err:  # no Triton, no C++ compiler, a dynamo limitation, ...
        text = " ".join(str(err).split())[:160]
        _warn_once(f"compile-{device.type}", f"torch.compile of the hash grid failed on "
                   f"{device.type} ({type(err).__name__}: {text}); using eager torch instead "
                   "(set --hashgrid.encoder.compile off to skip the attempt)")
        return None
    return _compiled_function()
