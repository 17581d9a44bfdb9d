"""Gaussian splats as .spz files (Niantic's compressed splat format, read by web viewers).

A .spz file is a gzip stream of a 16-byte little-endian header::

    uint32 magic 0x5053474e ("NGSP"), uint32 version (2 or 3), uint32 count,
    uint8 SH degree, uint8 fractional bits, uint8 flags (0x1 antialiased, 0x2 extensions),
    uint8 reserved

followed (after extension records when flag 0x2 is set) by one array per attribute:

- positions: 3 x 24-bit signed fixed point a Gaussian (``round(x * 2^fractional_bits)``);
- opacities: uint8 ``round(sigmoid(logit) * 255)``;
- colours: 3 x uint8 ``round(f_dc * 0.15 * 255 + 127.5)`` (the SH DC coefficient, squeezed so
  that base colours a little outside [0, 1] survive);
- scales: 3 x uint8 ``round((log sigma + 10) * 16)``;
- rotations: version 3, one little-endian uint32 a Gaussian: the index of the largest
  component of the unit quaternion (x, y, z, w) in the top two bits, then the other three in
  order, 10 bits each (a sign bit and 9 bits of ``|q| / sqrt(1/2)``), the quaternion's sign
  chosen to make the largest positive; version 2, 3 x uint8 ``(x, y, z) * 127.5 + 127.5`` with
  w >= 0 derived;
- SH: (degree + 1)^2 - 1 coefficients x 3 channels as uint8, coefficient-major (channel
  fastest), ``round(c * 128) + 128`` rounded to buckets of 8 (degree 1) or 16 (higher), so
  that gzip packs them tighter.

Extension records (flag 0x2: vendor data such as camera limits) are skipped: they sit between
the header and the arrays, whose size the header fixes. The reference library writes a .ply's values as they are (it converts axes only when asked),
and so does fieldkit: a .spz holds the same world as the .ply it came from. Written as
version 3, which the current web viewers read. Versions 2, 3 and 4 are read; version 4 (the
reference library's default since 2026) keeps the header uncompressed, at 32 bytes with the
offset of a table of stream sizes, and compresses each array as its own zstd stream.
"""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fieldkit.errors import FieldkitError, warn
from fieldkit.splats.splat_file import byte_opacity_logits, splat_file_bytes
from fieldkit.train.checkpoint import atomic_write_bytes

MAGIC = 0x5053474E
MAGIC_BYTES = struct.pack("<I", MAGIC)
HEADER = struct.Struct("<IIIBBBB")
"""Versions 2-3, inside the gzip stream: magic, version, count, SH degree, fractional bits,
flags, reserved."""
HEADER_V4 = struct.Struct("<IIIBBBBI12x")
"""Version 4, uncompressed at the start of the file: as versions 2-3 with the stream count in
the reserved byte, then the offset of the stream table and 12 reserved bytes."""
COLOR_SCALE = 0.15
"""The reference's squeeze of the SH DC coefficient into a byte."""
SH1_BITS, SH_REST_BITS = 5, 4
"""Bits the writer keeps of degree-1 and of higher SH coefficients (the reference's defaults)."""
SQRT1_2 = math.sqrt(0.5)
FLAG_ANTIALIASED = 0x1
"""Header flag: the splats were trained with the antialiased (Mip-Splatting 2D filter) mode."""
MAX_COUNT = 1 << 26
"""More Gaussians than this in a header means a corrupt file (the reference stops at 10M)."""


def sh_dim(degree: int) -> int:
    """SH coefficients a channel beyond the DC term for ``degree``."""
    return (degree + 1) ** 2 - 1


def _quats_smallest_three(q: np.ndarray) -> np.ndarray:
    """Unit quaternions [N, 4] (x, y, z, w) -> uint32 [N] (version 3 rotations)."""
    largest = np.abs(q).argmax(axis=1)
    sign = np.where(q[np.arange(len(q)), largest] < 0, -1.0, 1.0)[:, None]
    q = q * sign
    comp = largest.astype(np.uint32)
    for j in range(4):  # the other three, in index order, each shifted in below the last
        skip = largest == j
        mag = np.floor(511.0 * np.abs(q[:, j]) / SQRT1_2 + 0.5).clip(0, 511).astype(np.uint32)
        part = ((q[:, j] < 0).astype(np.uint32) << 9) | mag
        comp = np.where(skip, comp, (comp << 10) | part)
    return comp


def _quats_from_smallest_three(comp: np.ndarray) -> np.ndarray:
    """uint32 [N] -> unit quaternions [N, 4] (x, y, z, w)."""
    comp = comp.astype(np.uint32)
    largest = (comp >> 30).astype(np.int64)
    q = np.zeros((len(comp), 4), np.float32)
    rest = comp.copy()
    for j in (3, 2, 1, 0):  # the last index sits in the lowest bits
        take = largest != j
        mag = (rest & 511).astype(np.float32)
        value = SQRT1_2 * mag / 511.0 * np.where((rest >> 9) & 1, -1.0, 1.0)
        q[:, j] = np.where(take, value, 0.0)
        rest = np.where(take, rest >> 10, rest)
    q[np.arange(len(q)), largest] = np.sqrt(np.clip(1.0 - (q ** 2).sum(axis=1), 0.0, None))
    return q


def _quantize_sh(values: np.ndarray, bits: int) -> np.ndarray:
    bucket = 1 << (8 - bits)
    q = np.round(values * 128.0) + 128.0
    q = np.floor((q + bucket // 2) / bucket) * bucket
    return q.clip(0, 255).astype(np.uint8)


def write_spz(path: str | Path, params: dict[str, Tensor], version: int = 3,
              sh_bits: tuple[int, int] = (SH1_BITS, SH_REST_BITS),
              antialiased: bool = False) -> Path:
    """Write splat params (fieldkit's layout, see ``fieldkit/splats/ply.py``) as a .spz file of
    ``version`` 2 or 3, keeping ``sh_bits`` (degree 1, higher degrees; 1..8) of each SH
    coefficient's byte; ``antialiased`` sets the flag of splats trained in gsplat's
    antialiased mode. Returns the path."""
    from fieldkit.splats.ply import sh_degree_of

    if version not in (2, 3):
        raise FieldkitError(f"spz version {version} cannot be written; use 2 or 3")
    p = {k: v.detach().to("cpu", torch.float32).numpy() for k, v in params.items()}
    n = len(p["means"])
    degree = sh_degree_of(params)
    bad = [k for k, v in p.items() if not np.isfinite(v).all()]
    if bad:
        raise FieldkitError(f"the splats have non-finite {', '.join(bad)}; they cannot be "
                            "written as .spz")
    extent = float(np.abs(p["means"]).max()) if n else 0.0
    # 12 fractional bits (the reference's) unless the scene is too large for 24 bits with them
    frac = 12 if extent * 4096 < (1 << 23) - 1 else \
        max(0, math.floor(math.log2(((1 << 23) - 1) / extent)))
    fixed = np.round(p["means"].astype(np.float64) * (1 << frac)).astype(np.int64)
    fixed = fixed.clip(-(1 << 23), (1 << 23) - 1).astype("<i4")
    positions = fixed.view(np.uint8).reshape(n, 3, 4)[:, :, :3]
    alphas = np.round(1.0 / (1.0 + np.exp(-p["opacities"].astype(np.float64))) * 255.0)
    colors = np.round(p["sh0"].reshape(n, 3) * (COLOR_SCALE * 255.0) + 127.5)
    scales = np.round((p["scales"] + 10.0) * 16.0)
    wxyz = p["quats"].astype(np.float64)
    xyzw = wxyz[:, [1, 2, 3, 0]] / np.maximum(np.linalg.norm(wxyz, axis=1, keepdims=True), 1e-12)
    if version == 3:
        rotations = _quats_smallest_three(xyzw).astype("<u4").view(np.uint8)
    else:
        xyz = xyzw[:, :3] * np.where(xyzw[:, 3:] < 0, -127.5, 127.5) + 127.5
        rotations = np.round(xyz).clip(0, 255).astype(np.uint8)
    dim = sh_dim(degree)
    sh = np.zeros((n, 0), np.uint8)
    if dim:
        rest = p["shN"].reshape(n, dim, 3)
        sh = np.concatenate([_quantize_sh(rest[:, :3], sh_bits[0]),
                             _quantize_sh(rest[:, 3:], sh_bits[1])], axis=1).reshape(n, -1)
    body = b"".join([
        HEADER.pack(MAGIC, version, n, degree, frac, FLAG_ANTIALIASED if antialiased else 0, 0),
        np.ascontiguousarray(positions).tobytes(),
        alphas.clip(0, 255).astype(np.uint8).tobytes(),
        colors.clip(0, 255).astype(np.uint8).tobytes(),
        scales.clip(0, 255).astype(np.uint8).tobytes(),
        np.ascontiguousarray(rotations).tobytes(),
        sh.tobytes()])
    path = Path(path)
    atomic_write_bytes(path, gzip.compress(body, compresslevel=6, mtime=0))
    return path


def read_spz(path: str | Path) -> dict[str, Tensor]:
    """Read a .spz file (version 2, 3 or 4) into float32 splat params (means [N, 3], scales
    [N, 3], quats [N, 4] (w, x, y, z), opacities [N], sh0 [N, 1, 3], shN [N, K-1, 3])."""
    path = Path(path)
    raw, fail = splat_file_bytes(path)
    version, n, degree, frac, arrays = (_zstd_streams(raw, fail) if raw[:4] == MAGIC_BYTES
                                        else _gzip_stream(raw, fail))
    positions, alphas, colors, scales, rotations, sh = arrays
    dim = sh_dim(degree)
    b = positions.reshape(n, 3, 3).astype(np.int32)
    fixed = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    means = fixed.astype(np.float32) / float(1 << frac)
    if version >= 3:
        xyzw = _quats_from_smallest_three(rotations.view("<u4"))
    else:
        xyz = rotations.reshape(n, 3).astype(np.float32) / 127.5 - 1.0
        w = np.sqrt(np.clip(1.0 - (xyz ** 2).sum(axis=1, keepdims=True), 0.0, None))
        xyzw = np.concatenate([xyz, w], axis=1)
    rest = np.zeros((n, 0, 3), np.float32)
    if dim:
        q = sh.reshape(n, dim, 3).astype(np.float32)
        rest = (q - 128.0) / 128.0
        if degree == 4:
            warn(f"{path.name} has SH degree 4; fieldkit keeps degrees 0-3 and drops the 4th band")
            rest = rest[:, :sh_dim(3)]
    out = {
        "means": means,
        "scales": scales.reshape(n, 3).astype(np.float32) / 16.0 - 10.0,
        "quats": xyzw[:, [3, 0, 1, 2]],
        "opacities": byte_opacity_logits(alphas / 255.0),
        "sh0": ((colors.reshape(n, 3).astype(np.float32) / 255.0 - 0.5) / COLOR_SCALE
                ).reshape(n, 1, 3),
        "shN": rest,
    }
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in out.items()}


def _sizes(version: int, n: int, degree: int) -> list[int]:
    """Bytes of positions, opacities, colours, scales, rotations and SH for ``n`` Gaussians."""
    return [9 * n, n, 3 * n, 3 * n, (4 if version >= 3 else 3) * n, 3 * sh_dim(degree) * n]


def _check_header(version: int, n: int, degree: int, frac: int, fail) -> None:
    if version not in (2, 3, 4):
        raise fail(f"SPZ version {version} is not supported (fieldkit reads versions 2 to 4)")
    if n > MAX_COUNT or degree > 4 or frac > 23:
        raise fail(f"implausible header ({n} Gaussians, SH degree {degree}, {frac} fractional "
                   "bits); the file is corrupt")


def spz_antialiased(path: str | Path) -> bool:
    """Whether a .spz file's header flags its splats as trained in the antialiased mode (False
    for a file too short or not an SPZ: ``read_spz`` reports those)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(HEADER.size)
            if head[:4] != MAGIC_BYTES:   # versions 2-3: the header is inside the gzip stream
                f.seek(0)
                head = gzip.GzipFile(fileobj=f).read(HEADER.size)
    except (OSError, EOFError, zlib.error):
        return False
    return len(head) == HEADER.size and bool(HEADER.unpack(head)[5] & FLAG_ANTIALIASED)


def _gzip_stream(raw: bytes, fail) -> tuple[int, int, int, int, list[np.ndarray]]:
    """Versions 2 and 3: one gzip stream of the header and the arrays one after the other."""
    try:
        data = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error):
        raise fail("not a gzip stream, or a truncated one; a .spz file is gzip-compressed "
                   "(versions 2-3) or starts with 'NGSP' (version 4)") from None
    if len(data) < HEADER.size:
        raise fail(f"{len(data)} bytes after gunzip, fewer than the 16-byte header")
    magic, version, n, degree, frac, flags, _ = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise fail(f"bad magic 0x{magic:08x} (expected 0x{MAGIC:08x}, 'NGSP'); not a .spz file")
    if version == 4:
        raise fail("a version-4 header inside a gzip stream; the file is corrupt")
    _check_header(version, n, degree, frac, fail)
    sizes = _sizes(version, n, degree)
    extra = len(data) - HEADER.size - sum(sizes)
    if extra < 0:
        raise fail(f"truncated: {len(data) - HEADER.size} bytes of Gaussians where {n} need "
                   f"{sum(sizes)}; the file was not written completely")
    offset = HEADER.size + (extra if flags & 2 else 0)  # extension records sit before the data
    arrays = []
    for size in sizes:
        arrays.append(np.frombuffer(data, np.uint8, size, offset))
        offset += size
    return version, n, degree, frac, arrays


def _zstd_streams(raw: bytes, fail) -> tuple[int, int, int, int, list[np.ndarray]]:
    """Version 4: a 32-byte header, extension records, a table of (compressed, uncompressed)
    uint64 sizes at the header's offset, then one zstd stream an attribute (empty ones left
    out)."""
    import zstandard

    if len(raw) < HEADER_V4.size:
        raise fail(f"{len(raw)} bytes, fewer than the 32-byte header of SPZ version 4")
    _, version, n, degree, frac, _, streams, toc = HEADER_V4.unpack_from(raw)
    _check_header(version, n, degree, frac, fail)
    if version != 4:
        raise fail(f"an uncompressed version-{version} header; the file is corrupt")
    sizes = _sizes(version, n, degree)
    kept = [s for s in sizes if s]
    if streams != len(kept) or toc < HEADER_V4.size or toc + 16 * streams > len(raw):
        raise fail(f"its table of {streams} streams does not fit {n} Gaussians of SH degree "
                   f"{degree}; the file is corrupt or truncated")
    table = np.frombuffer(raw, "<u8", 2 * streams, toc).reshape(streams, 2)
    offset, arrays = toc + 16 * streams, []
    for (packed, size), expected in zip(table.tolist(), kept):
        if size != expected or offset + packed > len(raw):
            raise fail("a stream's size does not match the header, or the file is truncated")
        try:
            out = zstandard.ZstdDecompressor().decompress(raw[offset:offset + packed],
                                                          max_output_size=size)
        except zstandard.ZstdError as e:
            raise fail(f"a zstd stream does not decompress ({e}); the file is corrupt") from None
        if len(out) != size:
            raise fail("a zstd stream decompresses to the wrong size; the file is corrupt")
        arrays.append(np.frombuffer(out, np.uint8))
        offset += packed
    it = iter(arrays)
    return version, n, degree, frac, [next(it) if s else np.zeros(0, np.uint8) for s in sizes]
