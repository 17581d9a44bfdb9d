"""tiny-cuda-nn (optional) for the hash grid: probe, choice, the encoding, and parameter layout.

tiny-cuda-nn is not on PyPI and needs a CUDA build, so fieldkit never requires it. Install it
on a CUDA machine with (README, "GPU"):

    pip install ninja
    pip install git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch

A hash grid whose ``HashGridConfig.convention`` is ``"tcnn"`` computes exactly tcnn's
``HashGrid`` encoding with our torch code (``fieldkit.encoders.hashgrid``), and its ``table``
[M, F] is tcnn's parameter vector [M * F] viewed as rows: level l's rows start at the sum of the
earlier levels' sizes, ``min(2**T, next multiple of 8 of res_l**3)``, and feature f of entry i
sits at ``(offset_l + i) * F + f``. So a run trained with tcnn loads with the torch twin (on a
CPU too) and the other way round; ``table_to_tcnn_params`` / ``table_from_tcnn_params`` also
move weights to and from other tcnn-based code. Grids of the default ``"fieldkit"`` convention
use another lattice and always run on the torch twin.
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor

from fieldkit.errors import FieldkitError
from fieldkit.render.backends import _choose, _one_line, cuda_available, run_with_gradients


def tcnn_encoding_config(config) -> dict:
    """The tcnn ``encoding_config`` of a ``HashGridConfig`` (any convention)."""
    return {"otype": "HashGrid", "n_levels": config.num_levels,
            "n_features_per_level": config.features_per_level,
            "log2_hashmap_size": config.log2_table_size,
            "base_resolution": config.base_resolution,
            "per_level_scale": config.per_level_scale()}


def _tcnn_smoke_test() -> None:
    """Build a small tcnn HashGrid on the current GPU and run forward and backward."""
    import tinycudann as tcnn

    enc = tcnn.Encoding(3, {"otype": "HashGrid", "n_levels": 2, "n_features_per_level": 2,
                            "log2_hashmap_size": 10, "base_resolution": 4,
                            "per_level_scale": 2.0}, dtype=torch.float32)
    x = torch.rand(256, 3, device="cuda")
    out = enc(x)
    out.sum().backward()
    torch.cuda.synchronize()
    if tuple(out.shape) != (256, 4) or enc.params.grad is None:
        raise RuntimeError(f"unexpected output of shape {tuple(out.shape)}")


@functools.lru_cache(maxsize=None)
def tcnn_status() -> tuple[bool, str]:
    """(ok, one-line reason): tinycudann imports, CUDA is present, and an encoding runs."""
    if not cuda_available():
        return False, "tiny-cuda-nn needs CUDA, which is not available here"
    try:
        import tinycudann  # noqa: F401
    except Exception as err:  # not installed, or built for another GPU / torch
        return False, (f"tinycudann cannot be imported ({_one_line(err)}); it is optional, see "
                       "the README's GPU section to install it")
    try:
        run_with_gradients(_tcnn_smoke_test)
    except Exception as err:
        return False, f"tiny-cuda-nn is installed but does not run ({_one_line(err)})"
    return True, f"tiny-cuda-nn runs on {torch.cuda.get_device_name()}"


def choose_hashgrid_backend(requested: str = "auto", device: torch.device | str | None = None,
                            convention: str = "tcnn") -> str:
    """``"tcnn"`` or ``"torch"``: which implementation encodes a hash grid on ``device``.

    The rules of ``fieldkit.render.backends``; in addition tcnn needs the tcnn convention:
    asking for it with another convention is a one-line error, and ``auto`` quietly keeps such
    a grid on the torch twin.
    """
    req = str(requested).strip().lower()
    if req in ("cuda", "tcnn") and convention != "tcnn":
        raise FieldkitError(f"hash-grid backend {requested!r} needs a grid trained with "
                            "--hashgrid.encoder.convention tcnn (this one uses "
                            f"{convention!r}); use the 'torch' or 'auto' backend")
    if req == "auto" and convention != "tcnn":
        return "torch"
    return _choose("tcnn", req, device, tcnn_status, "torch", "hash-grid backend",
                   "torch hash grid")


def prefer_tcnn_convention(model_config):
    """``model_config`` with its hash grid on the tcnn convention when its encoder backend
    allows tiny-cuda-nn and tcnn runs here (new CUDA runs then train on tcnn); else unchanged."""
    from dataclasses import replace

    enc = model_config.encoder
    if enc.convention == "tcnn" or str(enc.backend).lower() == "torch" or not tcnn_status()[0]:
        return model_config
    return replace(model_config, encoder=replace(enc, convention="tcnn"))


def tcnn_param_count(config) -> int:
    """Length of tcnn's parameter vector for ``config`` (sum of tcnn's level sizes times F)."""
    from dataclasses import replace

    return sum(replace(config, convention="tcnn").table_sizes()) * config.features_per_level


def table_to_tcnn_params(table: Tensor, config) -> Tensor:
    """[M, F] table of a tcnn-convention grid -> [M * F] float32 tcnn parameters (a copy)."""
    _check_convention(config)
    n = tcnn_param_count(config)
    if table.numel() != n or table.shape[-1] != config.features_per_level:
        raise FieldkitError(f"hash-grid table of shape {tuple(table.shape)} does not match "
                            f"tcnn's {n} parameters for this config")
    return table.detach().reshape(-1).float().clone()


def table_from_tcnn_params(params: Tensor, config) -> Tensor:
    """[M * F] tcnn parameters (any float dtype) -> [M, F] float32 table for the torch twin."""
    _check_convention(config)
    n = tcnn_param_count(config)
    if params.dim() != 1 or params.numel() != n:
        raise FieldkitError(f"tcnn parameters of shape {tuple(params.shape)} do not match this "
                            f"hash-grid config ({n} expected); check levels, features, "
                            "log2_table_size, base and max resolution")
    return params.detach().float().reshape(-1, config.features_per_level).clone()


def _check_convention(config) -> None:
    if config.convention != "tcnn":
        raise FieldkitError(f"a hash grid of the {config.convention!r} convention has no tcnn "
                            "layout; train with --hashgrid.encoder.convention tcnn")


class TcnnEncoding:
    """tcnn's HashGrid reading our table as its parameters: ``(table [M, F], x [N, 3]) ->
    [N, L * F]`` float32, differentiable with respect to the table.

    The tcnn module keeps no parameter of its own (it is not a submodule, so nothing of it is
    saved); each call hands it a flat view of our table, which its forward reads as
    ``self.params``. Parameters run in float32, so the result matches the torch twin to float32
    rounding.
    """

    encodes_whole = True
    """Returns [N, L * F] itself (HashGrid skips its own permute)."""

    def __init__(self, config, n_params: int, device: torch.device | str) -> None:
        import tinycudann as tcnn

        with torch.cuda.device(torch.device(device)):
            enc = tcnn.Encoding(3, tcnn_encoding_config(config), dtype=torch.float32)
        if enc.params.numel() != n_params:
            raise FieldkitError(f"tiny-cuda-nn lays this hash grid out in {enc.params.numel()} "
                                f"parameters, fieldkit's tcnn convention in {n_params}: the "
                                "installed tcnn version differs; use the 'torch' backend")
        del enc.params  # the table is the parameter; tcnn's forward reads `self.params`
        self.enc = enc

    def __call__(self, table: Tensor, x: Tensor) -> Tensor:
        self.enc.params = table.reshape(-1)
        try:
            return self.enc(x.float().contiguous()).float()
        finally:
            self.enc.params = None
