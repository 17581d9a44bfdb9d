"""Read GaussianSplats3D's .ksplat files (mkkellogg's three.js viewer), read only.

Layout (little-endian; ``SplatBuffer`` of @mkkellogg/gaussian-splats-3d, format 0.1):

- a 4096-byte header: uint8 version major, minor; uint32 at 4 max section count, at 8 section
  count, at 12 max splat count, at 16 splat count; uint16 at 20 compression level (0, 1 or
  2); float32 at 24 the scene centre, at 36 and 40 the range of 8-bit SH (0: -1.5..1.5);
- 1024 bytes per section: uint32 [0] splat count, [1] max splat count, [2] bucket size, [3]
  bucket count, float32 [4] bucket block size, uint16 [10] bytes per bucket, uint32 [6]
  compression scale range (0: the level's), [7] storage bytes, [8] full buckets, [9]
  partially filled buckets, uint16 [20] SH degree (0-2);
- then each section: uint32 lengths of its partially filled buckets, float32 xyz bucket
  centres, then its splats, one record each:
  - level 0: centre float32 x3, scale float32 x3 (not log), rotation float32 w x y z, colour
    uint8 r g b a, SH float32;
  - levels 1-2: centre uint16 x3, (v - range) * (block size / 2 / range) + its bucket's
    centre; scale and rotation float16; colour uint8; SH float16 (level 1) or uint8 over the
    header's range (level 2).
- Colour bytes are floor((0.5 + C0 * f_dc) * 255), alpha floor(sigmoid(opacity) * 255). SH
  are stored per degree, channel-major within it: degree 1 as R0-2 G0-2 B0-2, degree 2 as
  R3-7 G3-7 B3-7. Centres are in the frame of the .ply they came from.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fieldkit.encoders.sh import C0
from fieldkit.splats.splat_file import byte_opacity_logits, splat_file_bytes

HEADER_BYTES, SECTION_BYTES = 4096, 1024
SH_PER_DEGREE = {0: 0, 1: 9, 2: 24}
"""SH values a splat stores for each degree (3 channels)."""
SCALE_RANGE = {0: 1, 1: 32767, 2: 32767}
"""Default compression scale range of each level."""
SH_HALF_RANGE = 1.5
"""Default half range of 8-bit SH (level 2)."""


def _layout(level: int, degree: int) -> tuple[np.dtype, np.dtype, np.dtype, int]:
    """(centre dtype, scale/rotation dtype, SH dtype, bytes a splat) of a compression level."""
    centre = np.dtype("<f4") if level == 0 else np.dtype("<u2")
    rest = np.dtype("<f4") if level == 0 else np.dtype("<f2")
    sh = {0: np.dtype("<f4"), 1: np.dtype("<f2"), 2: np.dtype("u1")}[level]
    size = 3 * centre.itemsize + 7 * rest.itemsize + 4 + SH_PER_DEGREE[degree] * sh.itemsize
    return centre, rest, sh, size


def read_ksplat(path: str | Path) -> dict[str, Tensor]:
    """Read a .ksplat file into float32 splat params (means [N, 3], scales [N, 3] log, quats
    [N, 4] (w, x, y, z), opacities [N] logits, sh0 [N, 1, 3], shN [N, K-1, 3]; SH degree at
    most 2, the lowest of its sections)."""
    path = Path(path)
    raw, fail = splat_file_bytes(path)
    if len(raw) < HEADER_BYTES:
        raise fail(f"{len(raw)} bytes, fewer than the 4096-byte .ksplat header")
    major, minor = raw[0], raw[1]
    max_sections = int(np.frombuffer(raw, "<u4", 1, 4)[0])
    level = int(np.frombuffer(raw, "<u2", 1, 20)[0])
    sh_lo, sh_hi = (float(v) for v in np.frombuffer(raw, "<f4", 2, 36))
    sh_lo, sh_hi = sh_lo or -SH_HALF_RANGE, sh_hi or SH_HALF_RANGE
    if major != 0 or level not in SH_PER_DEGREE or max_sections > 1 << 16:
        raise fail(f"version {major}.{minor}, compression level {level}, {max_sections} "
                   "sections: not a .ksplat of format 0.x (levels 0-2)")
    base = HEADER_BYTES + max_sections * SECTION_BYTES
    if len(raw) < base:
        raise fail("truncated inside its section headers")
    parts = []
    for i in range(max_sections):
        at = HEADER_BYTES + i * SECTION_BYTES
        u32 = np.frombuffer(raw, "<u4", 10, at).astype(np.int64)
        u16 = np.frombuffer(raw, "<u2", 21, at)
        count, bucket_size, buckets = int(u32[1]), int(u32[2]), int(u32[3])
        block = float(np.frombuffer(raw, "<f4", 1, at + 16)[0])
        bucket_bytes, degree = int(u16[10]), int(u16[20])
        full, partial = int(u32[8]), int(u32[9])
        scale_range = int(u32[6]) or SCALE_RANGE[level]
        if degree not in SH_PER_DEGREE:
            raise fail(f"section {i} has SH degree {degree}; .ksplat stores 0-2")
        centre_t, rest_t, sh_t, size = _layout(level, degree)
        meta = bucket_bytes * buckets + 4 * partial
        end = base + meta + size * count
        if end > len(raw):
            raise fail(f"truncated: section {i} needs {end} bytes, the file has {len(raw)}")
        rec = np.frombuffer(raw, np.uint8, size * count, base + meta).reshape(count, size)
        centre = rec[:, :3 * centre_t.itemsize].copy().view(centre_t).astype(np.float64)
        if level >= 1:
            lengths = np.frombuffer(raw, "<u4", partial, base).astype(np.int64)
            sizes = np.concatenate([np.full(full, bucket_size, np.int64), lengths])
            if buckets < len(sizes) or sizes.sum() < count:
                raise fail(f"section {i}'s buckets do not cover its {count} splats; the file "
                           "is corrupt")
            centres = np.frombuffer(raw, "<f4", 3 * buckets, base + 4 * partial).reshape(-1, 3)
            bucket = np.repeat(np.arange(len(sizes)), sizes)[:count]
            step = block / 2.0 / scale_range
            centre = (centre - scale_range) * step + centres[bucket]
        o = 3 * centre_t.itemsize
        rest = rec[:, o:o + 7 * rest_t.itemsize].copy().view(rest_t).astype(np.float32)
        o += 7 * rest_t.itemsize
        colour = rec[:, o:o + 4].astype(np.float32)
        o += 4
        sh = rec[:, o:].copy().view(sh_t).astype(np.float32)
        if level == 2:
            sh = sh / 255.0 * (sh_hi - sh_lo) + sh_lo
        parts.append((centre, rest, colour, sh, degree))
    if not parts:
        raise fail("no sections")
    degree = min(p[4] for p in parts)
    means, rest, colour, sh = (np.concatenate([p[k][:, :SH_PER_DEGREE[degree]] if k == 3 else p[k]
                                               for p in parts]) for k in range(4))
    n = len(means)
    if not (np.isfinite(means).all() and np.isfinite(rest).all() and np.isfinite(sh).all()):
        raise fail("non-finite centres, scales, rotations or SH; the file is corrupt")
    blocks = [sh[:, :9].reshape(n, 3, 3)] if degree >= 1 else []
    if degree >= 2:
        blocks.append(sh[:, 9:24].reshape(n, 3, 5))
    shn = np.concatenate([b.transpose(0, 2, 1) for b in blocks], 1) if blocks else \
        np.zeros((n, 0, 3), np.float32)
    out = {
        "means": means.astype(np.float32),
        "scales": np.log(np.maximum(rest[:, :3], 1e-12)),
        "quats": rest[:, 3:7],
        "opacities": byte_opacity_logits(colour[:, 3] / 255.0),
        "sh0": ((colour[:, :3] / 255.0 - 0.5) / C0).reshape(n, 1, 3),
        "shN": shn,
    }
    return {k: torch.as_tensor(np.ascontiguousarray(v), dtype=torch.float32)
            for k, v in out.items()}
