"""Procedural demo scene in the Blender / NeRF-synthetic format, made from nothing but numpy.

The object is an analytic signed distance function (SDF) inside the box [-1.2, 1.2]^3 (world
units, z up): a checkered sphere, a tilted striped torus around it, a rotated cube below and a
small cone on top. It is sphere-traced per pixel with 2x2 supersampling and shaded with ambient +
Lambert + a view-dependent Blinn-Phong highlight. Images are straight-alpha RGBA PNGs with a
transparent background, cameras use the Blender/OpenGL convention (camera looks down -z, +y up).

    python -m fieldkit.data.demo OUT_DIR [--size N]

Everything here is independent of the rest of fieldkit on purpose: tests use :func:`pixel_rays`
and :func:`ray_hits` as ground truth for the loaders' camera conventions.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

CAMERA_ANGLE_X = 0.6911112070083618  # same horizontal field of view as the lego scene
CAMERA_RADIUS = 4.0
BOX = 1.2  # the object lies inside [-BOX, BOX]^3
MAX_STEPS = 96
HIT_EPS = 1e-3
LIGHT_DIR = np.array([0.45, -0.35, 0.82]) / np.linalg.norm([0.45, -0.35, 0.82])
AMBIENT, DIFFUSE, SPECULAR, SHININESS = 0.22, 0.78, 0.55, 48.0


def _rot(axis: str, deg: float) -> np.ndarray:
    """3x3 rotation matrix about a world axis ('x', 'y' or 'z') by ``deg`` degrees."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


# Primitive placements. Local coordinates are R^T (p - centre), stored as row-vector matrices.
SPHERE_C, SPHERE_R = np.array([0.0, 0.0, -0.05]), 0.5
TORUS_C, TORUS_RMAJ, TORUS_RMIN = np.array([0.0, 0.0, -0.05]), 0.78, 0.11
TORUS_ROT = _rot("z", 35.0) @ _rot("x", 28.0)
CUBE_C, CUBE_HALF = np.array([0.52, -0.55, -0.72]), 0.2
CUBE_ROT = _rot("z", 30.0) @ _rot("x", 20.0)
CONE_APEX, CONE_RB, CONE_H = np.array([-0.18, 0.22, 0.98]), 0.2, 0.5  # points up (+z)

BASE_COLOURS = np.array(
    [
        [0.95, 0.55, 0.15],  # sphere, checker colour A (orange)
        [0.95, 0.92, 0.80],  # sphere, checker colour B (cream)
        [0.15, 0.55, 0.80],  # torus (blue, with darker stripes)
        [0.85, 0.15, 0.20],  # cube (red)
        [0.25, 0.75, 0.30],  # cone (green)
    ]
)


def _components(p: np.ndarray) -> np.ndarray:
    """Signed distances of the four primitives. ``p`` [N,3] -> [4,N] (sphere, torus, cube, cone)."""
    out = np.empty((4, len(p)))
    q = p - SPHERE_C
    out[0] = np.sqrt(np.einsum("ij,ij->i", q, q)) - SPHERE_R

    q = (p - TORUS_C) @ TORUS_ROT
    ring = np.hypot(q[:, 0], q[:, 1]) - TORUS_RMAJ
    out[1] = np.hypot(ring, q[:, 2]) - TORUS_RMIN

    q = np.abs((p - CUBE_C) @ CUBE_ROT) - CUBE_HALF
    outside = np.maximum(q, 0.0)
    out[2] = np.sqrt(np.einsum("ij,ij->i", outside, outside)) + np.minimum(q.max(axis=1), 0.0)

    # Exact capped cone (apex at CONE_APEX, base disc of radius CONE_RB at CONE_H below it),
    # in the 2D half-plane w = (distance from the axis, height above the apex).
    q = p - CONE_APEX
    wx, wy = np.hypot(q[:, 0], q[:, 1]), q[:, 2]
    k = np.clip((wx * CONE_RB - wy * CONE_H) / (CONE_RB**2 + CONE_H**2), 0.0, 1.0)
    ax, ay = wx - CONE_RB * k, wy + CONE_H * k  # to the nearest point on the slanted side
    bx, by = wx - CONE_RB * np.clip(wx / CONE_RB, 0.0, 1.0), wy + CONE_H  # to the base disc
    s = np.maximum(wx * CONE_H + wy * CONE_RB, -(wy + CONE_H))  # > 0 outside
    out[3] = np.sqrt(np.minimum(ax * ax + ay * ay, bx * bx + by * by)) * np.sign(s)
    return out


def scene_sdf(points: np.ndarray) -> np.ndarray:
    """Signed distance to the object. ``points`` [N,3] world coordinates -> [N] (negative inside)."""
    return _components(np.asarray(points, dtype=np.float64).reshape(-1, 3)).min(axis=0)


def scene_normals(points: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Unit outward normals from SDF central differences. ``points`` [N,3] -> [N,3]."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    grad = np.empty_like(p)
    for k in range(3):
        e = np.zeros(3)
        e[k] = h
        grad[:, k] = scene_sdf(p + e) - scene_sdf(p - e)
    return grad / np.maximum(np.linalg.norm(grad, axis=-1, keepdims=True), 1e-12)


def albedo(points: np.ndarray) -> np.ndarray:
    """Base colour of the surface nearest to each point. ``points`` [N,3] -> [N,3] in [0,1]."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    which = _components(p).argmin(axis=0)
    col = BASE_COLOURS[np.array([0, 2, 3, 4])[which]].copy()
    # Sphere: checker in spherical coordinates (8 sectors in azimuth x 6 bands in polar angle).
    q = p - SPHERE_C
    phi = np.arctan2(q[:, 1], q[:, 0])
    theta = np.arccos(np.clip(q[:, 2] / np.maximum(np.linalg.norm(q, axis=-1), 1e-12), -1, 1))
    cell = np.floor(phi / (2 * np.pi) * 8).astype(int) + np.floor(theta / np.pi * 6).astype(int)
    on_b = (which == 0) & (cell % 2 == 1)
    col[on_b] = BASE_COLOURS[1]
    # Torus: 12 darker stripes around the ring, plus one yellow marker band at its local +x.
    q = (p - TORUS_C) @ TORUS_ROT
    ang = np.arctan2(q[:, 1], q[:, 0])
    stripe = (which == 1) & (np.floor(ang / (2 * np.pi) * 24).astype(int) % 2 == 0)
    col[stripe] *= 0.45
    col[(which == 1) & (np.abs(ang) < 0.12)] = [1.0, 0.9, 0.2]  # a single yellow marker band
    return col


def shade(
    points: np.ndarray, normals: np.ndarray, view_dirs: np.ndarray, base: np.ndarray | None = None
) -> np.ndarray:
    """Ambient + Lambert + Blinn-Phong colour, clipped to [0,1].

    ``points`` [N,3] surface points, ``normals`` [N,3] unit normals, ``view_dirs`` [N,3] unit
    vectors from the surface TOWARDS the camera, optional ``base`` [N,3] albedo (default
    :func:`albedo`). Returns [N,3]. The specular term depends on ``view_dirs``.
    """
    n = np.asarray(normals, dtype=np.float64).reshape(-1, 3)
    v = np.asarray(view_dirs, dtype=np.float64).reshape(-1, 3)
    base = albedo(points) if base is None else np.asarray(base, dtype=np.float64).reshape(-1, 3)
    ndl = np.clip(n @ LIGHT_DIR, 0.0, None)
    half = v + LIGHT_DIR
    half /= np.maximum(np.linalg.norm(half, axis=-1, keepdims=True), 1e-12)
    spec = SPECULAR * np.clip((n * half).sum(-1), 0.0, None) ** SHININESS * (ndl > 0)
    rgb = base * (AMBIENT + DIFFUSE * ndl)[:, None] + spec[:, None]
    return np.clip(rgb, 0.0, 1.0)


def ray_hits(origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sphere-trace rays against the object (at most ``MAX_STEPS`` steps per ray).

    ``origins`` [N,3], ``dirs`` [N,3] (need not be unit). Returns ``hit`` bool [N] and ``t`` float
    [N] with ``origins + t[:, None] * dirs`` the first surface point (``inf`` where no hit;
    ``0`` for rays that start inside the object).
    """
    o = np.asarray(origins, dtype=np.float64).reshape(-1, 3)
    d = np.asarray(dirs, dtype=np.float64).reshape(-1, 3)
    norm = np.maximum(np.linalg.norm(d, axis=-1), 1e-300)
    u = d / norm[:, None]
    # Clip the march to the bounding box [-BOX, BOX]^3 (slab test).
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / u
        t0, t1 = (-BOX - o) * inv, (BOX - o) * inv
    t_near = np.nan_to_num(np.minimum(t0, t1), nan=-np.inf).max(axis=-1).clip(0.0, None)
    t_far = np.nan_to_num(np.maximum(t0, t1), nan=np.inf).min(axis=-1)
    t = np.full(len(o), np.inf)
    idx = np.nonzero(t_near < t_far)[0]
    ts, tf = t_near[idx], t_far[idx]
    for _ in range(MAX_STEPS):
        if idx.size == 0:
            break
        dist = scene_sdf(o[idx] + ts[:, None] * u[idx])
        done = dist < HIT_EPS
        t[idx[done]] = ts[done]
        ts = ts + dist
        keep = ~done & (ts < tf)
        idx, ts, tf = idx[keep], ts[keep], tf[keep]
    if idx.size:  # not converged after MAX_STEPS: grazing rays very close to the surface count
        close = scene_sdf(o[idx] + ts[:, None] * u[idx]) < 5 * HIT_EPS
        t[idx[close]] = ts[close]
    hit = np.isfinite(t)
    return hit, np.where(hit, t / norm, np.inf)


def look_at(position: np.ndarray) -> np.ndarray:
    """Camera-to-world 4x4 (Blender/OpenGL: camera looks down -z, +y up) at ``position`` [3]
    looking at the origin with world up +z. Returns [4,4] like NeRF-synthetic transform_matrix."""
    pos = np.asarray(position, dtype=np.float64)
    z = pos / np.linalg.norm(pos)
    x = np.cross([0.0, 0.0, 1.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, pos
    return c2w + 0.0  # no negative zeros in the JSON


def pixel_rays(
    c2w: np.ndarray, width: int, height: int, camera_angle_x: float, offset=(0.5, 0.5)
) -> tuple[np.ndarray, np.ndarray]:
    """World-space rays through pixels (i, j) at x = j + offset[0], y = i + offset[1].

    OpenGL camera space: direction ((x - W/2)/f, -(y - H/2)/f, -1), f = 0.5 W / tan(0.5 angle_x).
    ``c2w`` [4,4] or [3,4]. Returns origins [H,W,3] and (non-unit) directions [H,W,3].
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    f = 0.5 * width / np.tan(0.5 * camera_angle_x)
    y, x = np.meshgrid(np.arange(height) + offset[1], np.arange(width) + offset[0], indexing="ij")
    cam = np.stack([(x - width / 2) / f, -(y - height / 2) / f, -np.ones_like(x)], axis=-1)
    dirs = cam @ c2w[:3, :3].T
    return np.broadcast_to(c2w[:3, 3], dirs.shape).copy(), dirs


def render(c2w: np.ndarray, size: int, camera_angle_x: float = CAMERA_ANGLE_X) -> np.ndarray:
    """Render one straight-alpha RGBA view with 2x2 supersampling. Returns uint8 [size,size,4]."""
    offs = [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)]
    rays = [pixel_rays(c2w, size, size, camera_angle_x, off) for off in offs]
    o = np.concatenate([r[0].reshape(-1, 3) for r in rays])  # [4*size*size, 3]
    d = np.concatenate([r[1].reshape(-1, 3) for r in rays])
    hit, t = ray_hits(o, d)
    p = o[hit] + t[hit, None] * d[hit]
    v = -d[hit] / np.linalg.norm(d[hit], axis=-1, keepdims=True)
    rgb = np.zeros((len(o), 3))
    rgb[hit] = shade(p, scene_normals(p), v)
    rgb_sum = rgb.reshape(4, size, size, 3).sum(axis=0)
    cover = hit.reshape(4, size, size).sum(axis=0).astype(np.float64)
    alpha = cover / 4.0
    rgb = np.where(cover[..., None] > 0, rgb_sum / np.maximum(cover, 1)[..., None], 0.0)
    return np.round(np.concatenate([rgb, alpha[..., None]], axis=-1) * 255).astype(np.uint8)


def _positions(elev_deg: np.ndarray, azim: np.ndarray) -> np.ndarray:
    """Points on the camera sphere. Elevations (degrees) [N], azimuths (radians) [N] -> [N,3]."""
    el = np.radians(elev_deg)
    return CAMERA_RADIUS * np.stack(
        [np.cos(el) * np.cos(azim), np.cos(el) * np.sin(azim), np.sin(el)], axis=-1
    )


def camera_positions(n_train: int, n_val: int, n_test: int, seed: int = 0) -> dict:
    """Camera centres per split: {'train': [n_train,3], 'val': [n_val,3], 'test': [n_test,3]}.

    Train: Fibonacci spiral, uniform in area for elevations -10..70 deg, with seeded jitter.
    Val: random in the same band. Test: orbit at 30 deg elevation.
    """
    rng = np.random.default_rng(seed)
    lo, hi = np.sin(np.radians(-10.0)), np.sin(np.radians(70.0))
    k = np.arange(n_train)
    s = lo + (hi - lo) * (k + 0.5 + rng.uniform(-0.3, 0.3, n_train)) / max(n_train, 1)
    az = k * np.pi * (3.0 - np.sqrt(5.0)) + rng.uniform(-0.1, 0.1, n_train)
    train = _positions(np.degrees(np.arcsin(s)), az)
    val = _positions(
        np.degrees(np.arcsin(rng.uniform(lo, hi, n_val))), rng.uniform(0, 2 * np.pi, n_val)
    )
    test = _positions(np.full(n_test, 30.0), 0.3 + 2 * np.pi * np.arange(n_test) / max(n_test, 1))
    return {"train": train, "val": val, "test": test}


def generate_demo_scene(
    out_dir: str | Path,
    size: int = 96,
    n_train: int = 100,
    n_val: int = 8,
    n_test: int = 16,
    seed: int = 0,
) -> Path:
    """Write a NeRF-synthetic style scene to ``out_dir`` and return its path.

    Creates transforms_{train,val,test}.json (top-level camera_angle_x, frames with file_path
    "./<split>/r_<i>" and a 4x4 camera-to-world transform_matrix), {split}/r_<i>.png RGBA uint8
    images of size x size, and README.md. Deterministic for a given ``seed``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split, positions in camera_positions(n_train, n_val, n_test, seed).items():
        (out / split).mkdir(exist_ok=True)
        frames = []
        for i, pos in enumerate(positions):
            c2w = look_at(pos)
            Image.fromarray(render(c2w, size), "RGBA").save(out / split / f"r_{i}.png", optimize=True)
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": c2w.tolist()})
        doc = {"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}
        (out / f"transforms_{split}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "README.md").write_text(
        "# fieldkit demo scene\n\n"
        "A synthetic NeRF-synthetic (Blender format) scene: a checkered sphere, tilted torus, cube "
        "and cone, sphere-traced from an analytic SDF with view-dependent Blinn-Phong shading.\n"
        f"Generated with `python -m fieldkit.data.demo OUT_DIR --size {size}` "
        f"(n_train={n_train}, n_val={n_val}, n_test={n_test}, seed={seed}); no external data.\n"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m fieldkit.data.demo OUT_DIR [--size N] [--seed S]``."""
    ap = argparse.ArgumentParser(prog="python -m fieldkit.data.demo", description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", help="folder to write the scene into")
    ap.add_argument("--size", type=int, default=96, help="image width and height (default 96)")
    ap.add_argument("--n-train", type=int, default=100)
    ap.add_argument("--n-val", type=int, default=8)
    ap.add_argument("--n-test", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    path = generate_demo_scene(a.out_dir, a.size, a.n_train, a.n_val, a.n_test, a.seed)
    print(f"wrote demo scene to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
