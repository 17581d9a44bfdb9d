"""C++ loops compiled for the CPU (splat projection and blending, the hash encoding): how
they are built and how a process decides, once, whether it may use them.

Each is a ``torch.utils.cpp_extension`` built on first use with g++ and ninja (once per
machine, cached in torch's extension folder, ``TORCH_EXTENSIONS_DIR``) with OpenMP, without
which ATen's ``parallel_for`` (inlined into the extension) runs on one thread. Its status is
asked once per process: an environment variable can switch it off, no compiler or a failed
build or smoke test gives the torch twin and a one-line reason (``fieldkit doctor``).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from fieldkit.render.backends import has_cxx_compiler, run_with_gradients, switched_off


def load_cpu_extension(name: str, sources: list[Path]):
    """Build (the first time on this machine) and load the extension ``name``."""
    from torch.utils.cpp_extension import load

    try:   # the ninja of the pip package, when the venv's bin folder is not on PATH
        import ninja

        os.environ["PATH"] = f"{ninja.BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"
    except ImportError:
        pass
    return load(name=name, sources=[str(p) for p in sources], extra_cflags=["-O3", "-fopenmp"],
                extra_ldflags=["-fopenmp"], verbose=False)


def cpu_extension_status(variable: str, what: str, build_seconds: int, build: Callable[[], object],
                         smoke_test: Callable[[], None], ok: str) -> tuple[bool, str]:
    """(usable, one-line reason) for the compiled ``what`` (e.g. "the CPU splat blending"):
    off when ``variable`` says so or without a compiler; else ``build()`` under a spinner and
    ``smoke_test()`` with autograd on (the first ask may come from a ``no_grad`` render)."""
    if switched_off(variable):
        return False, f"{variable} is off"
    if not has_cxx_compiler():
        return False, f"no C++ compiler (g++) to build {what}"
    from fieldkit.progress import building

    try:
        with building(f"building {what} (once per machine, ~{build_seconds} s)"):
            build()
        run_with_gradients(smoke_test)
    except Exception as err:  # no ninja, a failed build, a mismatch: the torch twin runs
        text = " ".join(str(err).split())[:160]
        return False, f"{what} did not build or run ({type(err).__name__}: {text})"
    return True, ok
