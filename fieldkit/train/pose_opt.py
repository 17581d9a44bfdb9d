"""Camera pose refinement while training (``--pose-opt``): nerfstudio's SO3xR3 camera optimiser
and gsplat's ``pose_opt``, for captures whose poses are a little off (COLMAP on a phone
capture, poses from a tracker).

Every camera of the scene gets a learned correction ``delta = (t, w)``: a translation ``t`` and
an axis-angle rotation ``w`` applied in the camera's own frame, ``c2w' = c2w @ [exp(w) | t]``.
All corrections start at zero, and only the training cameras receive gradients, so held-out
views are rendered from their given poses (as nerfstudio and gsplat evaluate). The corrections
are optimised with the scene by their own row-wise Adam (``PoseRefiner``), under the scene's
learning-rate schedule, with a weight decay that pulls them towards the given poses.

Volumetric models correct their rays (``adjust_rays``: ``o' = o + R t``, ``d' = R exp(w) R^T
d``); splats correct the camera they rasterize into (``adjust_c2w``). Both are the same map,
tested against each other.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fieldkit.train.row_adam import RowAdam

POSES_FILE = "poses.json"
"""A --pose-opt run's corrections (``PoseRefiner.report``), written with every checkpoint."""
SMALL_ANGLE2 = 1e-8
"""Squared rotation angles below this use the Taylor series of Rodrigues' coefficients."""


def so3_exp(w: Tensor) -> Tensor:
    """[B, 3] axis-angle -> [B, 3, 3] rotation (Rodrigues), differentiable at zero."""
    theta2 = (w * w).sum(-1)
    small = theta2 < SMALL_ANGLE2
    theta = torch.sqrt(theta2.clamp_min(SMALL_ANGLE2))
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta ** 2)
    x, y, z = w.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(-1, 3, 3)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(k)
    return eye + a[:, None, None] * k + b[:, None, None] * (k @ k)


class PoseCorrections(nn.Module):
    """Learned corrections of ``c2w`` [N, 4, 4] (the scene's cameras, box coordinates)."""

    def __init__(self, c2w: Tensor):
        super().__init__()
        self.register_buffer("base", c2w.detach().float().clone(), persistent=False)
        self.delta = nn.Parameter(torch.zeros(len(c2w), 6, device=c2w.device))
        """[N, 6] per camera: translation (box units, camera frame), then axis-angle."""

    def matrices(self, idx: Tensor) -> Tensor:
        """[B] camera indices -> [B, 4, 4] corrections in each camera's frame."""
        d = self.delta[idx]
        m = torch.zeros(len(idx), 4, 4, dtype=d.dtype, device=d.device)
        m[:, :3, :3] = so3_exp(d[:, 3:])
        m[:, :3, 3] = d[:, :3]
        m[:, 3, 3] = 1.0
        return m

    def adjust_c2w(self, c2w: Tensor, idx: Tensor) -> Tensor:
        """c2w [B, 4, 4] of cameras ``idx`` [B] -> corrected [B, 4, 4] (differentiable)."""
        return c2w @ self.matrices(idx).to(c2w.dtype)

    def adjust_rays(self, origins: Tensor, dirs: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Rays [R, 3] of cameras ``idx`` [R] -> the rays of the corrected cameras: the origin
        moves by ``R t``, the direction turns by ``R exp(w) R^T`` (unit length kept)."""
        cams, inverse = torch.unique(idx, return_inverse=True)
        rot = self.base[cams, :3, :3]                          # [C, 3, 3]
        corr = self.matrices(cams)
        turn = rot @ corr[:, :3, :3] @ rot.transpose(1, 2)     # world-frame rotation [C, 3, 3]
        shift = (rot @ corr[:, :3, 3:]).squeeze(-1)            # [C, 3]
        dirs = torch.einsum("rij,rj->ri", turn[inverse].to(dirs.dtype), dirs)
        return origins + shift[inverse].to(origins.dtype), dirs

    @torch.no_grad()
    def refined(self) -> Tensor:
        """[N, 4, 4] every camera's corrected c2w."""
        return self.adjust_c2w(self.base, torch.arange(len(self.base), device=self.base.device))


def turn_poses(c2w: Tensor, views: Tensor, rot_deg: float, trans: float, seed: int = 0
               ) -> Tensor:
    """c2w [N, 4, 4] with the poses of ``views`` [V] turned (rms ``rot_deg`` degrees) and moved
    (rms ``trans``) in their own frames, seeded: known pose errors, for tests and benchmarks."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(len(views), 3, generator=g) * math.radians(rot_deg) / math.sqrt(3)
    t = torch.randn(len(views), 3, generator=g) * trans / math.sqrt(3)
    wrong = torch.eye(4).repeat(len(views), 1, 1)
    wrong[:, :3, :3], wrong[:, :3, 3] = so3_exp(w), t
    out = c2w.clone()
    out[views] = c2w[views] @ wrong.to(c2w.dtype)
    return out


def pose_errors(c2w: Tensor, truth: Tensor) -> tuple[Tensor, Tensor]:
    """Rotation (degrees) and position (box units) error [N] of ``c2w`` [N, 4, 4] against
    ``truth`` [N, 4, 4]."""
    rel = truth[:, :3, :3].transpose(1, 2) @ c2w[:, :3, :3]
    cos = ((rel.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos)), (c2w[:, :3, 3] - truth[:, :3, 3]).norm(dim=-1)


class PoseRefiner:
    """What a trainer holds for ``--pose-opt``: the corrections of every camera of the scene,
    their optimiser (``RowAdam``: only the cameras a step saw move), their share of the
    learning-rate schedule and their place in checkpoints."""

    def __init__(self, cameras, train_views: Tensor, lr: float, weight_decay: float,
                 start: float = 0.0, device: torch.device | str = "cpu"):
        """cameras: the scene's ``Cameras`` (box coordinates); train_views [T]: the indices
        whose corrections are learned and reported; start: the fraction of the budget before
        they learn (until then the corrections stay zero and the rays are not adjusted)."""
        self.cameras, self.train_views = cameras, train_views
        self.corrections = PoseCorrections(cameras.c2w.to(device))
        self.adam = RowAdam(self.corrections.delta, lr, weight_decay)
        self.start, self.learning = float(start), start <= 0

    def set_lr_factor(self, factor: float, progress: float = 1.0) -> None:
        """The schedule's ``factor`` at ``progress`` (fraction of the budget) in [0, 1]."""
        self.learning = progress >= self.start
        self.adam.set_lr_factor(factor)

    def zero_grad(self) -> None:
        self.adam.zero_grad()

    def step(self) -> None:
        if self.learning:
            self.adam.step()

    def _sizes(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(training views [T], their corrections [T, 6], rotation in degrees [T], translation
        in box units [T]), on the CPU."""
        idx = self.train_views.cpu()
        d = self.corrections.delta.detach().cpu()[idx]
        return idx, d, d[:, 3:].norm(dim=-1) * (180 / math.pi), d[:, :3].norm(dim=-1)

    def stats(self) -> dict[str, float]:
        """Mean rotation (degrees) and translation (box units) of the training cameras'
        corrections, for the log."""
        _, _, rot, trans = self._sizes()
        return {"pose_rot_deg": float(rot.mean()) if len(rot) else 0.0,
                "pose_trans": float(trans.mean()) if len(trans) else 0.0}

    def report(self, scale: float) -> dict:
        """The training cameras' corrections for ``poses.json``: rotation in degrees and
        translation in the scene's units (``scale``: box units per scene unit)."""
        idx, d, rot, trans = self._sizes()
        rot, trans = rot.tolist(), (trans / scale).tolist()
        n = max(1, len(rot))
        return {"mean_rotation_deg": sum(rot) / n, "max_rotation_deg": max(rot, default=0.0),
                "mean_translation": sum(trans) / n, "max_translation": max(trans, default=0.0),
                "cameras": [{"index": int(i), "rotation_deg": r, "translation": t,
                             "correction": [float(x) for x in row]}
                            for i, r, t, row in zip(idx.tolist(), rot, trans, d.tolist())]}

    def train_cameras(self):
        """The training cameras with their corrected poses (``Cameras``)."""
        from dataclasses import replace

        refined = self.corrections.refined().cpu()
        cams = self.cameras[self.train_views]
        return replace(cams, c2w=refined[self.train_views].to(cams.c2w.dtype))

    def state_tensors(self) -> dict[str, Tensor]:
        """The corrections and their optimiser state, as checkpoint tensors."""
        return self.adam.state_tensors("pose.")

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Take back ``state_tensors`` (a run saved without ``--pose-opt`` keeps zeros)."""
        self.adam.load_state_tensors(tensors, "pose.")
