"""How a model file stores its occupancy grids compactly (``model.safetensors`` only).

The occupancy grid was most of a small model's file: the MLP model's 65k parameters take
0.25 MiB, and its 64^3 grid took 1.25 MiB more, its EMA density as float32 (1 MiB) and its
bitfield as one byte a cell (0.25 MiB). A model file now keeps:
- every bool tensor packed 8 cells a byte (uint8 under the same name; its shape in the file's
  metadata under ``packed``): rendering reads only this bitfield, which comes back exactly;
- the grids' EMA density as float16 (names under ``half``), clamped to float16's range: it is
  only read to continue training from the file or to start a distilled student's grid, where
  float16's 3 significant digits are more than the EMA itself carries.

Checkpoints (``checkpoint/model.safetensors``) keep every tensor verbatim, so a resumed run
continues bit for bit. Model files written before (no ``packed`` or ``half`` metadata) load as
they are.
"""
from __future__ import annotations

import json
import math

import torch
from torch import Tensor

from fieldkit.errors import FieldkitError

PACKED = "packed"
"""Metadata key: JSON ``{name: shape}`` of the bool tensors stored as packed bits."""
HALF = "half"
"""Metadata key: JSON ``[name]`` of the float32 tensors stored as float16."""
_BIT_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def pack_bits(mask: Tensor) -> Tensor:
    """bool [...] -> uint8 [ceil(numel / 8)]: the flat mask 8 a byte, first bit highest (as
    ``numpy.packbits``), the last byte padded with zeros."""
    flat = mask.detach().reshape(-1).to("cpu", torch.uint8)
    pad = (-flat.numel()) % 8
    flat = torch.cat([flat, flat.new_zeros(pad)]).reshape(-1, 8)
    return (flat * _BIT_WEIGHTS).sum(1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, shape: list[int] | tuple[int, ...]) -> Tensor:
    """uint8 [ceil(prod(shape) / 8)] (``pack_bits``) -> bool ``shape``."""
    n = math.prod(shape)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != (n + 7) // 8:
        raise ValueError(f"{packed.numel()} {packed.dtype} bytes cannot hold a bool tensor of "
                         f"shape {list(shape)}")
    bits = (packed.reshape(-1, 1) & _BIT_WEIGHTS.to(packed.device)) != 0
    return bits.reshape(-1)[:n].reshape(shape)


def _grid_densities(model: torch.nn.Module) -> list[str]:
    from fieldkit.render.occupancy import OccupancyGrid

    return [f"{name}.density" if name else "density" for name, module in model.named_modules()
            if isinstance(module, OccupancyGrid)]


def compact_state(model: torch.nn.Module, weights: str = "float32"
                  ) -> tuple[dict[str, Tensor], dict[str, str]]:
    """``model``'s state dict as a model file stores it, and the metadata that undoes it
    (``expand_state``). ``weights="float16"`` stores its float32 parameters as float16 too
    (``TrainConfig.weights``)."""
    if weights not in ("float32", "float16"):
        raise ValueError(f"weights must be float32 or float16, got {weights!r}")
    state = model.state_dict()
    packed = {k: list(v.shape) for k, v in state.items() if v.dtype == torch.bool}
    names = _grid_densities(model) + ([k for k, _ in model.named_parameters()]
                                      if weights == "float16" else [])
    half = [k for k in names if state.get(k) is not None and state[k].dtype == torch.float32]
    out = dict(state)
    for k in packed:
        out[k] = pack_bits(state[k])
    limit = torch.finfo(torch.float16).max
    for k in half:
        out[k] = state[k].detach().clamp(-limit, limit).half()
    return out, {PACKED: json.dumps(packed), HALF: json.dumps(half)}


def expand_state(tensors: dict[str, Tensor], metadata: dict[str, str], path=None
                 ) -> dict[str, Tensor]:
    """A model file's tensors back as the model's state dict (bitfields unpacked, densities
    float32). ``path`` names the file in errors."""
    try:
        packed = json.loads(metadata.get(PACKED, "{}"))
        half = json.loads(metadata.get(HALF, "[]"))
        out = dict(tensors)
        for k, shape in packed.items():
            out[k] = unpack_bits(tensors[k], [int(s) for s in shape])
        for k in half:
            out[k] = tensors[k].float()
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        where = f"{path} " if path is not None else ""
        raise FieldkitError(f"{where}has a damaged model file layout ({err}); re-export or "
                            "retrain the model") from None
    return out
