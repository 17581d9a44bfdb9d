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

Only gsplat (Gaussian splats) exists today; nerfacc (volume rendering) and tiny-cuda-nn (hash
grids) are meant to get a probe and a ``choose_*`` of the same shape, sharing ``_choose``.
"""
from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=None)
def gsplat_status() -> tuple[bool, str]:
    """(ok, one-line reason): gsplat imports, CUDA is present, and its kernels build and run."""
    try:
        import gsplat
    except Exception as err:  # not installed, or a missing dependency of gsplat
        return False, f"gsplat cannot be imported ({_one_line(err)}); pip install gsplat"
    version = getattr(gsplat, "__version__", "?")
    if not cuda_available():
        return False, (f"gsplat {version} is installed but CUDA is not available "
                       "(torch.cuda.is_available() is False)")
    try:
        _gsplat_smoke_test()
    except Exception as err:  # any failure, build errors included, means "not usable"
        return False, (f"gsplat {version} CUDA kernels failed to build or run "
                       f"({_one_line(err)})")
    return True, f"gsplat {version} CUDA kernels run on {torch.cuda.get_device_name()}"


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
