"""Gaussian splats as compressed .ply files (PlayCanvas SuperSplat's ``*.compressed.ply``).

Three elements, binary little endian:

- ``chunk``: per 256 Gaussians (in file order), float32 bounds min/max of x, y, z, of the log
  scales and of the base colours r, g, b (``SH_C0 * f_dc + 0.5``);
- ``vertex``: four uint32 a Gaussian: ``packed_position`` and ``packed_scale`` (11, 10 and 11
  bits of unorm between the chunk's bounds), ``packed_rotation`` (the index of the largest
  component of the unit quaternion (w, x, y, z) in the top two bits, the others in order, 10
  bits each, as ``q / sqrt(2) + 0.5``), ``packed_color`` (8 bits each of r, g, b between the
  chunk's bounds and of sigmoid(opacity));
- ``sh`` (optional): uint8 ``f_rest_*`` in the .ply's channel-major order, as
  ``(c / 8 + 0.5) * 256`` truncated.

gsplat's exporter writes them (``gsplat.exporter.splat2ply_bytes_compressed``, which drops
Gaussians of opacity below 1/255); ``read_splat_ply`` hands such a file to ``decode``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fieldkit.errors import FieldkitError
from fieldkit.splats.splat_file import SH_C0, byte_opacity_logits, gsplat_exporter
from fieldkit.train.checkpoint import atomic_write_bytes

CHUNK = 256
SUFFIX = ".compressed.ply"
CHUNK_PROPERTIES = tuple(f"{m}_{a}" for m in ("min", "max") for a in "xyz") + \
    tuple(f"{m}_scale_{a}" for m in ("min", "max") for a in "xyz") + \
    tuple(f"{m}_{c}" for m in ("min", "max") for c in "rgb")
PACKED = ("packed_position", "packed_rotation", "packed_scale", "packed_color")


def is_compressed(elements: list[tuple[str, int, list[tuple[str, str]]]]) -> bool:
    """Whether a parsed PLY header is the compressed layout (a chunk element and packed
    vertices)."""
    names = {name: {p for p, _ in props} for name, _, props in elements}
    return "chunk" in names and set(PACKED) <= names.get("vertex", set())


def write_compressed_ply(path: str | Path, params: dict[str, Tensor]) -> Path:
    """Write splat params as a compressed .ply through gsplat's exporter."""
    splat2ply_bytes_compressed = gsplat_exporter().splat2ply_bytes_compressed
    p = {k: v.detach().to("cpu", torch.float32) for k, v in params.items()}
    n = len(p["means"])
    sh_n = p["shN"].reshape(n, -1, 3).permute(0, 2, 1).reshape(n, -1)  # channel-major
    data = splat2ply_bytes_compressed(p["means"], p["scales"], p["quats"], p["opacities"],
                                      p["sh0"].reshape(n, 3), sh_n)
    if sh_n.shape[1] == 0:   # base colours only: no SH element (the writer leaves an empty one)
        head, sep, body = data.partition(b"end_header\n")
        lines = [ln for ln in head.split(b"\n") if not ln.startswith(b"element sh ")]
        data = b"\n".join(lines) + sep + body
    path = Path(path)
    atomic_write_bytes(path, data)
    return path


def _unorm(value: np.ndarray, shift: int, bits: int) -> np.ndarray:
    return ((value >> shift) & ((1 << bits) - 1)).astype(np.float32) / ((1 << bits) - 1)


def _lerp(low: np.ndarray, high: np.ndarray, t: np.ndarray) -> np.ndarray:
    return low * (1.0 - t) + high * t


def decode(f, path: Path, endian: str, elements) -> dict[str, Tensor]:
    """The splat params of a compressed .ply whose header (``endian``, ``elements``) has been
    read from the open file ``f``."""
    def fail(problem: str) -> FieldkitError:
        return FieldkitError(f"cannot read compressed splat file {path}: {problem}")

    blocks = {}
    for name, count, props in elements:
        dtype = np.dtype([(p, endian + code) for p, code in props])
        buf = f.read(count * dtype.itemsize)
        if len(buf) < count * dtype.itemsize:
            raise fail(f"truncated in element {name!r}; the file was not written completely")
        blocks[name] = np.frombuffer(buf, dtype, count)
    chunk, vertex = blocks["chunk"], blocks["vertex"]
    missing = [p for p in CHUNK_PROPERTIES if p not in chunk.dtype.names]
    if missing:
        raise fail(f"its chunks lack {', '.join(missing)}")
    n = len(vertex)
    if len(chunk) * CHUNK < n:
        raise fail(f"{len(chunk)} chunks cannot hold {n} Gaussians ({CHUNK} a chunk)")
    c = {p: chunk[p].astype(np.float32)[np.arange(n) // CHUNK] for p in CHUNK_PROPERTIES}
    pos, rot, scale, color = (vertex[p].astype(np.uint32) for p in PACKED)

    def unpack_111011(value: np.ndarray, prefix: str) -> np.ndarray:
        t = [_unorm(value, 21, 11), _unorm(value, 11, 10), _unorm(value, 0, 11)]
        return np.stack([_lerp(c[f"min_{prefix}{a}"], c[f"max_{prefix}{a}"], t[i])
                         for i, a in enumerate("xyz")], axis=1)

    parts = [(_unorm(rot, s, 10) - 0.5) * math.sqrt(2.0) for s in (20, 10, 0)]
    largest = (rot >> 30).astype(np.int64)
    quats = np.zeros((n, 4), np.float32)
    others = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[largest]
    for k in range(3):
        quats[np.arange(n), others[:, k]] = parts[k]
    quats[np.arange(n), largest] = np.sqrt(np.clip(1.0 - (quats ** 2).sum(axis=1), 0.0, None))
    rgb = np.stack([_lerp(c[f"min_{ch}"], c[f"max_{ch}"], _unorm(color, s, 8))
                    for ch, s in zip("rgb", (24, 16, 8))], axis=1)
    rest = np.zeros((n, 0, 3), np.float32)
    if "sh" in blocks:
        sh = blocks["sh"]
        if len(sh) != n:
            raise fail(f"{len(sh)} SH rows for {n} Gaussians")
        k = len(sh.dtype.names or ())
        if k not in (0, 9, 24, 45):
            raise fail(f"{k} f_rest values a Gaussian do not form SH degree 1-3")
        q = np.stack([sh[f"f_rest_{i}"] for i in range(k)], axis=1).astype(np.float32)
        values = np.where(q == 0, 0.0, np.where(q == 255, 1.0, (q + 0.5) / 256.0))
        rest = ((values - 0.5) * 8.0).reshape(n, 3, k // 3).transpose(0, 2, 1)
    out = {
        "means": unpack_111011(pos, ""),
        "scales": unpack_111011(scale, "scale_"),
        "quats": quats,
        "opacities": byte_opacity_logits(_unorm(color, 0, 8)),
        "sh0": ((rgb - 0.5) / SH_C0).reshape(n, 1, 3),
        "shN": rest,
    }
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in out.items()}
