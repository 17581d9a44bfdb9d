"""Which implementation renders: capability probes for the optional CUDA libraries.

Each optional backend has a probe: a function of no arguments returning ``(ok, reason)``, where
``reason`` is one line saying what works or what is missing. Probes never raise and are cached
per process (``functools.lru_cache``; call ``.cache_clear()`` to probe again), because a probe
may JIT-compile CUDA kernels the first time (minutes for gsplat) and later calls must be free.

A ``choose_*`` function turns what the user asked for into a backend name:

- ``"auto"``: the CUDA library when the tensors live on a CUDA device and its probe passes,
  else the pure-torch code. A failing probe on a CUDA device warns ONCE per process
  (``FieldkitWarning``) with the reason; a CPU device falls back silently.
- ``"cuda"`` (or the library's own name): the CUDA library, or a one-line ``FieldkitError``
  saying what to do when it cannot run.
- ``"torch"``: the pure-torch code, always.

Backends: gsplat (Gaussian splats: ``gsplat_status``, ``choose_splat_backend``), nerfacc
(volume rendering: ``nerfacc_status``, ``choose_volume_backend``) and, next to the hash grid it
serves, tiny-cuda-nn (``fieldkit.encoders.hashgrid_tcnn``: ``tcnn_status``,
``choose_hashgrid_backend``), all sharing ``_choose``.
"""
from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable

import torch

from fieldkit.errors import FieldkitError, FieldkitWarning

BACKEND_CHOICES = ("auto", "cuda", "torch")
"""What a user may ask for (a library's own name, e.g. ``"gsplat"``, means ``"cuda"``)."""

_warned: set[str] = set()
"""Libraries whose fallback warning this process has already shown."""


def _one_line(err: BaseException) -> str:
    """``TypeName: message`` squashed to one line of at most 200 characters."""
    text = " ".join(str(err).split())
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def switched_off(variable: str) -> bool:
    """Whether the environment variable ``variable`` turns a feature off (0, off, false, no)."""
    import os

    return os.environ.get(variable, "").lower() in ("0", "off", "false", "no")


def has_cxx_compiler() -> bool:
    """Whether a C++ compiler (g++ or c++) is on PATH, for torch.compile or an extension."""
    import shutil

    return shutil.which("g++") is not None or shutil.which("c++") is not None


def cuda_available() -> bool:
    """True when torch was built with CUDA and sees at least one device."""
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # a broken driver install can raise instead of returning False
        return False


def _gsplat_smoke_test() -> None:
    """Render and backpropagate two Gaussians with gsplat on the current CUDA device.

    Raises whatever gsplat raises (ImportError, a build failure from the JIT compiler, a CUDA
    error, ...). The first call compiles gsplat's kernels unless a prebuilt wheel is installed.
    """
    import gsplat

    try:  # gsplat 1.x: importing its backend loads or JIT-builds the kernels
        from gsplat.cuda._backend import _C
    except ImportError:
        _C = True  # another layout: the render below tells
    if _C is None:  # gsplat printed why; say it in one line
        raise RuntimeError("no prebuilt kernels and no CUDA toolkit (nvcc) to build them")
    dev = torch.device("cuda")
    means = torch.tensor([[0.0, 0.0, 2.0], [0.1, -0.1, 3.0]], device=dev, requires_grad=True)
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 2, device=dev)
    scales = torch.full((2, 3), 0.2, device=dev)
    opacities = torch.tensor([0.8, 0.6], device=dev)
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=dev)
    viewmats = torch.eye(4, device=dev)[None]
    Ks = torch.tensor([[[16.0, 0.0, 8.0], [0.0, 16.0, 8.0], [0.0, 0.0, 1.0]]], device=dev)
    rgb, alpha, _ = gsplat.rasterization(means, quats, scales, opacities, colors, viewmats, Ks,
                                         16, 16, packed=False, render_mode="RGB+ED")
    (rgb.sum() + alpha.sum()).backward()
    torch.cuda.synchronize()
    if tuple(rgb.shape) != (1, 16, 16, 4) or not bool(torch.isfinite(rgb).all()):
        raise RuntimeError(f"unexpected output of shape {tuple(rgb.shape)}")
    if not float(alpha.max()) > 0.5 or means.grad is None:
        raise RuntimeError("the two test Gaussians did not render or got no gradient")


def run_with_gradients(smoke_test: Callable[[], None]) -> None:
    """Run a probe's ``smoke_test`` with autograd on. A probe is cached for the process and
    the first ask often comes from a render under ``no_grad`` or ``inference_mode`` (a viewer
    frame, an export, a distillation teacher): there, a smoke test that backpropagates would
    fail and leave the whole process on the torch fallback."""
    with torch.inference_mode(False), torch.enable_grad():
        smoke_test()


def _library_status(module: str, smoke_test: Callable[[], None]) -> tuple[bool, str]:
    """(ok, one-line reason) for a CUDA library: it imports, CUDA is present, and
    ``smoke_test`` (its kernels built and run on a tiny problem) raises nothing."""
    import importlib

    try:
        lib = importlib.import_module(module)
    except Exception as err:  # not installed, or a missing dependency of it
        return False, f"{module} cannot be imported ({_one_line(err)}); pip install {module}"
    version = getattr(lib, "__version__", "?")
    if not cuda_available():
        return False, (f"{module} {version} is installed but CUDA is not available "
                       "(torch.cuda.is_available() is False)")
    try:
        run_with_gradients(smoke_test)
    except Exception as err:  # any failure, build errors included, means "not usable"
        return False, (f"{module} {version} CUDA kernels failed to build or run "
                       f"({_one_line(err)})")
    return True, f"{module} {version} CUDA kernels run on {torch.cuda.get_device_name()}"


@functools.lru_cache(maxsize=None)
def gsplat_status() -> tuple[bool, str]:
    """(ok, one-line reason): gsplat imports, CUDA is present, and its kernels build and run."""
    return _library_status("gsplat", _gsplat_smoke_test)


def _device_type(device: torch.device | str | None) -> str:
    if device is None:
        return "cuda" if cuda_available() else "cpu"
    return torch.device(device).type


def _choose(library: str, requested: str, device: torch.device | str | None,
            status: Callable[[], tuple[bool, str]], fallback: str, what: str,
            fallback_desc: str) -> str:
    """The rule shared by the ``choose_*`` functions: returns ``library`` or ``fallback``.

    ``what`` names the setting in messages ("splat backend"); ``fallback_desc`` names the
    pure-torch replacement ("pure-torch rasterizer").
    """
    req = str(requested).strip().lower()
    if req == library:
        req = "cuda"
    if req not in BACKEND_CHOICES:
        raise FieldkitError(f"unknown {what} {requested!r}: use one of "
                            f"{', '.join(BACKEND_CHOICES)}")
    if req == "torch":
        return fallback
    on_cuda = _device_type(device) == "cuda"
    if req == "cuda":
        ok, reason = status()
        if not ok:
            raise FieldkitError(f"{what} 'cuda' needs {library}, which cannot run here: "
                                f"{reason}; install a CUDA build of torch and {library}, or "
                                f"use the 'torch' {what}")
        if not on_cuda:
            raise FieldkitError(f"{what} 'cuda' needs the model on a CUDA device, not "
                                f"{device}; move it to 'cuda' or use the 'torch' {what}")
        return library
    if not on_cuda:  # auto on the CPU: the torch code, silently
        return fallback
    ok, reason = status()
    if ok:
        return library
    if library not in _warned:
        _warned.add(library)
        warnings.warn(f"{reason}; using the {fallback_desc} instead (slower)", FieldkitWarning,
                      stacklevel=3)
    return fallback


def choose_splat_backend(requested: str = "auto", device: torch.device | str | None = None
                         ) -> str:
    """``"gsplat"`` or ``"torch"``: which Gaussian-splat rasterizer renders on ``device``.

    requested: "auto" | "cuda" (alias "gsplat") | "torch"; device: where the Gaussians live
    (None: CUDA when available). Raises ``FieldkitError`` when "cuda" cannot be honoured.
    """
    return _choose("gsplat", requested, device, gsplat_status, "torch", "splat backend",
                   "pure-torch rasterizer")


def _nerfacc_smoke_test() -> None:
    """March three rays through a 4^3 grid with nerfacc on CUDA, composite and backpropagate.

    The grid's cells with i < 2 (x < 0) are empty, so the counts also check that nerfacc reads
    ``binaries[i, j, k]`` with i along x, as ``OccupancyGrid`` stores it. Raises whatever
    nerfacc raises (a JIT build failure, a CUDA error, ...); the first call compiles nerfacc's
    kernels unless a prebuilt wheel is installed (minutes).
    """
    import nerfacc
    from nerfacc.cuda._backend import _C  # loads, or JIT-builds, the kernels

    if _C is None:  # nerfacc printed why; say it in one line
        raise RuntimeError("no prebuilt kernels and no CUDA toolkit (nvcc) to build them")
    dev = torch.device("cuda")
    origins = torch.tensor([[-2.0, 0.1, 0.2], [0.3, -2.0, -0.1], [0.0, 0.0, 0.0]], device=dev)
    dirs = torch.eye(3, device=dev)
    binaries = torch.ones(1, 4, 4, 4, dtype=torch.bool, device=dev)
    binaries[0, :2] = False
    aabbs = torch.tensor([[-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]], device=dev)
    intervals, samples, _ = nerfacc.traverse_grids(origins, dirs, binaries, aabbs,
                                                   step_size=0.1)
    t_starts = intervals.vals[intervals.is_left]
    t_ends = intervals.vals[intervals.is_right]
    sigmas = torch.full_like(t_starts, 2.0).requires_grad_()
    weights, _, _ = nerfacc.render_weight_from_density(t_starts, t_ends, sigmas,
                                                       packed_info=samples.packed_info)
    opacity = nerfacc.accumulate_along_rays(weights, None, samples.ray_indices.long(), 3)
    opacity.sum().backward()
    torch.cuda.synchronize()
    counts = samples.packed_info[:, 1].tolist()
    if any(abs(c - want) > 1 for c, want in zip(counts, (10, 20, 10))):
        raise RuntimeError(f"unexpected samples per ray {counts} (want about 10, 20, 10)")
    if abs(float(opacity[2, 0]) - (1.0 - math.exp(-2.0))) > 1e-2:
        raise RuntimeError(f"unexpected opacity {float(opacity[2, 0]):.4f}")
    if sigmas.grad is None or not bool(torch.isfinite(sigmas.grad).all()):
        raise RuntimeError("no finite gradient through nerfacc's scan")


@functools.lru_cache(maxsize=None)
def nerfacc_status() -> tuple[bool, str]:
    """(ok, one-line reason): nerfacc imports, CUDA is present, and its kernels build and run."""
    return _library_status("nerfacc", _nerfacc_smoke_test)


def choose_volume_backend(requested: str = "auto", device: torch.device | str | None = None
                          ) -> str:
    """``"nerfacc"`` or ``"torch"``: which ray marcher and compositor render on ``device``.

    requested: "auto" | "cuda" (alias "nerfacc") | "torch"; device: where the rays live
    (None: CUDA when available). Raises ``FieldkitError`` when "cuda" cannot be honoured.
    """
    return _choose("nerfacc", requested, device, nerfacc_status, "torch", "volume backend",
                   "pure-torch ray marcher")
