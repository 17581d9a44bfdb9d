"""Where a teacher is looked at from: its training cameras, and random novel views around them.

Distillation needs no photos, only viewpoints. A run keeps its training cameras in
``cameras.safetensors`` (written by ``fieldkit train``); older runs fall back to the scene's
cameras when the scene folder is still there, and to a sphere of views around the box otherwise.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from fieldkit.data.cameras import Cameras
from fieldkit.export.paths import look_at, orbit_center
from fieldkit.train.checkpoint import load_tensors, save_tensors

CAMERAS_FILE = "cameras.safetensors"
"""The training cameras of a run (box coordinates, at the run's downscale)."""
DEFAULT_SIZE = 256
"""Image side of the fallback views when a run has neither cameras nor a scene."""
DEFAULT_FOV_DEG = 40.0
DEFAULT_RADIUS = 4.0
"""Fallback views: distance to the box centre in units of the box half-size."""


def save_train_cameras(run_dir: Path, cameras: Cameras) -> None:
    """Write the training cameras of a run (so that distillation works without the scene)."""
    save_tensors(Path(run_dir) / CAMERAS_FILE,
                 {k: v.detach().cpu() for k, v in cameras.state_dict().items()})


def sphere_cameras(n: int, bound: float, size: int = DEFAULT_SIZE,
                   radius: float | None = None) -> Cameras:
    """``n`` views on a sphere of ``radius`` (default DEFAULT_RADIUS x ``bound``; Fibonacci
    lattice, upper 3/4) looking at the box centre."""
    radius = DEFAULT_RADIUS * bound if radius is None else radius
    c2w = []
    for k in range(n):
        z = 1 - 1.5 * (k + 0.5) / n  # from the top down to -0.5
        r, phi = math.sqrt(max(0.0, 1 - z * z)), k * math.pi * (3 - math.sqrt(5))
        pos = radius * np.array([r * math.cos(phi), r * math.sin(phi), z])
        c2w.append(look_at(pos, np.zeros(3)))
    f = 0.5 * size / math.tan(math.radians(DEFAULT_FOV_DEG) / 2)
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]], dtype=torch.float32)
    return Cameras(torch.as_tensor(np.stack(c2w), dtype=torch.float32), K.expand(n, 3, 3).clone(),
                   torch.full((n,), size), torch.full((n,), size))


def train_cameras(run_dir: Path, config: dict) -> tuple[Cameras, str]:
    """The training cameras of a run and where they came from (run, scene or sphere)."""
    path = Path(run_dir) / CAMERAS_FILE
    if path.is_file():
        return Cameras.from_state_dict(load_tensors(path)), "run"
    scene = config.get("scene")
    if scene and Path(scene).is_dir():
        from fieldkit.data.scene import load_cameras

        cams, splits, _ = load_cameras(scene, downscale=int(config.get("downscale", 1)))
        return cams[splits["train"]], "scene"
    bound = float(config["model"]["config"]["render"]["bound"])
    return sphere_cameras(64, bound), "sphere"


def novel_cameras(cameras: Cameras, n: int, seed: int, scale: float = 1.0,
                  jitter: float = 0.05) -> Cameras:
    """``n`` random pinhole views around ``cameras``: each sits between two random training
    cameras (direction from the orbit centre interpolated, distance too, +-10%), looks at the
    orbit centre moved by ``jitter`` x the distance, and takes the first one's intrinsics scaled
    by ``scale``."""
    g = np.random.default_rng(seed)
    center = orbit_center(cameras)
    pos = cameras.positions.detach().cpu().double().numpy() - center  # [N, 3]
    dist = np.linalg.norm(pos, axis=1).clip(1e-9)
    unit = pos / dist[:, None]
    c2w, K, w, h = [], [], [], []
    for _ in range(n):
        a, b = g.integers(len(pos), size=2)
        t = g.uniform()
        d = (1 - t) * unit[a] + t * unit[b]
        d = d / np.linalg.norm(d) if np.linalg.norm(d) > 1e-3 else unit[a]
        r = ((1 - t) * dist[a] + t * dist[b]) * g.uniform(0.9, 1.1)
        target = center + g.normal(size=3) * jitter * r
        c2w.append(look_at(center + d * r, target))
        wa, ha = int(cameras.width[a]), int(cameras.height[a])
        ws, hs = max(8, round(wa * scale)), max(8, round(ha * scale))
        k = cameras.K[a].detach().cpu().double().numpy().copy()
        k[0] *= ws / wa
        k[1] *= hs / ha
        K.append(k)
        w.append(ws)
        h.append(hs)
    return Cameras(torch.as_tensor(np.stack(c2w), dtype=torch.float32),
                   torch.as_tensor(np.stack(K), dtype=torch.float32),
                   torch.tensor(w, dtype=torch.int64), torch.tensor(h, dtype=torch.int64))


def target_cameras(cameras: Cameras, n: int, seed: int, scale: float = 1.0,
                   train_share: float = 0.0) -> Cameras:
    """``n`` pinhole views a splat student learns from: ``round(n * train_share)`` at training
    cameras (evenly spaced among them, at most all of them; intrinsics scaled by ``scale``,
    lens distortion left out) and the rest ``novel_cameras``, interleaved so that any first
    views of the list hold both in proportion."""
    k = min(len(cameras), round(n * train_share))
    if k == 0:
        return novel_cameras(cameras, n, seed, scale)
    novel = novel_cameras(cameras, n - k, seed, scale) if n > k else cameras[:0]
    pick = torch.linspace(0, len(cameras) - 1, k).round().long()
    at = cameras[pick]
    at = at.resized((at.width.float() * scale).round().clamp_min(8).long(),
                    (at.height.float() * scale).round().clamp_min(8).long())
    order = torch.argsort(torch.cat([(torch.arange(k) + 0.5) / k,
                                     (torch.arange(n - k) + 0.5) / max(n - k, 1)]), stable=True)
    return Cameras(torch.cat([at.c2w, novel.c2w])[order], torch.cat([at.K, novel.K])[order],
                   torch.cat([at.width, novel.width])[order],
                   torch.cat([at.height, novel.height])[order])
