"""Gaussian-splat scenes as the .ply files of the original 3D Gaussian Splatting code (INRIA).

One element ``vertex``, binary little endian, float32 properties in this order::

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 .. f_rest_{3*(K-1)-1}
    opacity scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3

Values are stored as the optimiser sees them: ``opacity`` is the logit, ``scale_*`` the log of
the standard deviations, ``rot_*`` the quaternion (w, x, y, z), not normalised; the normals are
zeros. ``f_rest`` is channel-major: ``f_rest_{c*(K-1)+k} = shN[:, k, c]``.

The reader parses the header itself (no plyfile): binary little or big endian, properties in
any order and of any scalar type, extra properties ignored, normals optional. The SH degree
follows from the number of ``f_rest_*`` properties (0, 9, 24, 45 -> degree 0..3). A compressed
.ply (SuperSplat's layout, ``compressed_ply.py``) is recognised by its header and decoded.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fieldkit.errors import FieldkitError
from fieldkit.splats import compressed_ply
from fieldkit.train.checkpoint import atomic_write_bytes

SPLAT_KEYS = ("means", "scales", "quats", "opacities", "sh0", "shN")
"""Keys of a splat-params dict."""

REST_COUNT_TO_DEGREE = {0: 0, 9: 1, 24: 2, 45: 3}
"""Number of ``f_rest_*`` properties -> SH degree."""

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_ENDIAN = {"binary_little_endian": "<", "binary_big_endian": ">"}
_REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
             "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
_MAX_HEADER_BYTES = 1 << 20


def ply_property_names(num_rest: int) -> list[str]:
    """The 3DGS property names, in file order, for ``num_rest`` = 3 * (K - 1) f_rest values."""
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(num_rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def sh_degree_of(params: dict[str, Tensor]) -> int:
    """SH degree (0..3) of splat params, from ``shN`` [N, K-1, 3] (degree 0 when absent)."""
    sh_n = params.get("shN")
    rest = 0 if sh_n is None else int(sh_n.shape[1])
    degree = math.isqrt(rest + 1) - 1
    if (degree + 1) ** 2 != rest + 1 or degree > 3:
        raise FieldkitError(f"splat params have {rest} higher SH coefficients per channel; "
                            "expected 0, 3, 8 or 15 (SH degree 0..3)")
    return degree


def _as_numpy(params: dict[str, Tensor], n: int, key: str, shape: tuple[int, ...]) -> np.ndarray:
    value = params[key]
    if not isinstance(value, Tensor):
        value = torch.as_tensor(value)
    value = value.detach().to("cpu", torch.float32)
    if value.numel() != n * math.prod(shape):
        raise FieldkitError(f"splat params {key!r} has shape {tuple(value.shape)}, expected "
                            f"{(n, *shape)}; fix the splat scene before writing it")
    return value.reshape(n, *shape).numpy()


def write_splat_ply(path: str | Path, params: dict[str, Tensor]) -> Path:
    """Write splat params (means [N, 3], scales [N, 3], quats [N, 4], opacities [N],
    sh0 [N, 1, 3], shN [N, K-1, 3]) as a 3DGS .ply file, atomically. Returns the path."""
    path = Path(path)
    missing = [k for k in SPLAT_KEYS if k != "shN" and k not in params]
    if missing:
        raise FieldkitError(f"cannot write {path}: splat params lack {', '.join(missing)}; "
                            "pass a dict with means, scales, quats, opacities, sh0 and shN")
    n = int(params["means"].shape[0]) if params["means"].ndim else 0
    if n == 0:
        raise FieldkitError(f"cannot write {path}: the splat scene has no Gaussians; "
                            "train or load a scene with at least one Gaussian first")
    degree = sh_degree_of(params)
    rest = (degree + 1) ** 2 - 1
    arrays = {
        "means": _as_numpy(params, n, "means", (3,)),
        "scales": _as_numpy(params, n, "scales", (3,)),
        "quats": _as_numpy(params, n, "quats", (4,)),
        "opacities": _as_numpy(params, n, "opacities", ()),
        "sh0": _as_numpy(params, n, "sh0", (3,)),
        "shN": (_as_numpy(params, n, "shN", (rest, 3)) if rest
                else np.zeros((n, 0, 3), np.float32)),
    }
    bad = [k for k, a in arrays.items() if np.isnan(a).any()]
    if bad:
        raise FieldkitError(f"cannot write {path}: splat params {', '.join(bad)} contain NaN; "
                            "the optimisation diverged, resume from an earlier checkpoint")

    names = ply_property_names(3 * rest)
    data = np.zeros(n, dtype=np.dtype([(name, "<f4") for name in names]))
    for i, axis in enumerate("xyz"):
        data[axis] = arrays["means"][:, i]
    for c in range(3):
        data[f"f_dc_{c}"] = arrays["sh0"][:, c]
    f_rest = arrays["shN"].transpose(0, 2, 1).reshape(n, 3 * rest)  # [N, 3, K-1] channel-major
    for i in range(3 * rest):
        data[f"f_rest_{i}"] = f_rest[:, i]
    data["opacity"] = arrays["opacities"]
    for i in range(3):
        data[f"scale_{i}"] = arrays["scales"][:, i]
    for i in range(4):
        data[f"rot_{i}"] = arrays["quats"][:, i]

    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {name}" for name in names]
    header.append("end_header\n")
    atomic_write_bytes(path, "\n".join(header).encode("ascii") + data.tobytes())
    return path


def _parse_header(f, path: Path) -> tuple[str, list[tuple[str, int, list[tuple[str, str]]]]]:
    """(endianness char, [(element name, count, [(property, numpy type code)])])."""
    def fail(problem: str) -> FieldkitError:
        return FieldkitError(f"cannot read splat file {path}: {problem}")

    if f.readline(16).rstrip(b"\r\n") != b"ply":
        raise fail("not a PLY file (it does not start with 'ply'); pass a 3DGS .ply file")
    endian, elements, size = None, [], 0
    while True:
        raw = f.readline(4096)
        size += len(raw)
        if not raw.endswith(b"\n") or size > _MAX_HEADER_BYTES:
            raise fail("the PLY header has no 'end_header' line; the file is truncated or corrupt")
        try:
            words = raw.decode("ascii").split()
        except UnicodeDecodeError:
            raise fail("the PLY header is not ASCII text; the file is corrupt") from None
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "end_header":
            break
        if words[0] == "format":
            if len(words) < 2 or words[1] not in _ENDIAN:
                fmt = words[1] if len(words) > 1 else "(none)"
                raise fail(f"PLY format {fmt!r} is not supported; save the splats as "
                           "binary_little_endian")
            endian = _ENDIAN[words[1]]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements and len(words) >= 3:
            if words[1] == "list":
                raise fail(f"element {elements[-1][0]!r} has list property {words[-1]!r}, which "
                           "a splat file does not use; pass a 3DGS .ply file")
            if words[1] not in _PLY_TYPES or len(words) != 3:
                raise fail(f"bad property line {raw.decode().strip()!r}")
            elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
        else:
            raise fail(f"bad header line {raw.decode().strip()!r}")
    if endian is None:
        raise fail("the PLY header has no 'format' line")
    return endian, elements


def read_splat_ply(path: str | Path) -> dict[str, Tensor]:
    """Read a 3DGS .ply file into float32 splat params (means [N, 3], scales [N, 3],
    quats [N, 4], opacities [N], sh0 [N, 1, 3], shN [N, K-1, 3])."""
    path = Path(path)

    def fail(problem: str) -> FieldkitError:
        return FieldkitError(f"cannot read splat file {path}: {problem}")

    try:
        f = open(path, "rb")
    except OSError as e:
        raise fail(f"{e.strerror or e}; check the path") from None
    with f:
        endian, elements = _parse_header(f, path)
        if compressed_ply.is_compressed(elements):
            return compressed_ply.decode(f, path, endian, elements)
        offset = f.tell()
        vertex = None
        for name, count, props in elements:
            dtype = np.dtype([(p, endian + code) for p, code in props])
            if name == "vertex":
                vertex = (count, props, dtype)
                break
            offset += count * dtype.itemsize  # skip a fixed-size element before the vertices
        if vertex is None:
            raise fail("the PLY file has no 'vertex' element; pass a 3DGS .ply file")
        count, props, dtype = vertex
        names = {p for p, _ in props}
        if len(names) != len(props):
            raise fail("the vertex element names a property twice")
        missing = [p for p in _REQUIRED if p not in names]
        if missing:
            raise fail(f"the vertices lack propert{'y' if len(missing) == 1 else 'ies'} "
                       f"{', '.join(missing)}; this is not a 3D Gaussian Splatting file")
        rest_idx = sorted(int(m.group(1)) for p in names
                          if (m := re.fullmatch(r"f_rest_(\d+)", p)))
        if len(rest_idx) not in REST_COUNT_TO_DEGREE or rest_idx != list(range(len(rest_idx))):
            raise fail(f"{len(rest_idx)} f_rest_* properties (indices {rest_idx[:3]}..) do not "
                       "form SH degree 0..3 (expected f_rest_0.. with 0, 9, 24 or 45 of them)")
        f.seek(offset)
        buf = f.read(count * dtype.itemsize)
    if len(buf) < count * dtype.itemsize:
        raise fail(f"truncated: {len(buf)} bytes of vertex data where {count} vertices need "
                   f"{count * dtype.itemsize}; the file was not written completely")
    data = np.frombuffer(buf, dtype=dtype, count=count)

    def cols(*keys: str) -> np.ndarray:
        return np.stack([data[k].astype(np.float32) for k in keys], axis=-1)

    rest = len(rest_idx) // 3
    f_rest = cols(*[f"f_rest_{i}" for i in range(3 * rest)]) if rest else \
        np.zeros((count, 0), np.float32)
    out = {
        "means": cols("x", "y", "z"),
        "scales": cols("scale_0", "scale_1", "scale_2"),
        "quats": cols("rot_0", "rot_1", "rot_2", "rot_3"),
        "opacities": cols("opacity")[:, 0],
        "sh0": cols("f_dc_0", "f_dc_1", "f_dc_2").reshape(count, 1, 3),
        "shN": f_rest.reshape(count, 3, rest).transpose(0, 2, 1),  # channel-major -> [N, K-1, 3]
    }
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}
