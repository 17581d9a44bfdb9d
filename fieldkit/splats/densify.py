"""Adaptive density control for Gaussian splats (Kerbl et al. 2023, "3D Gaussian Splatting").

Every ``refine_every`` steps between ``refine_start`` and ``refine_stop`` the :class:`Densifier`
looks at the mean view-space positional gradient of each Gaussian (accumulated over the renders
since the last refinement, in NDC units like 3DGS / gsplat) and

- **clones** small Gaussians (max scale <= ``grow_scale3d * scene_extent``) whose gradient is
  above ``grow_grad2d``: an exact copy is appended;
- **splits** large ones above the threshold: the original is replaced by ``split_n`` children
  whose means are sampled from the Gaussian ``N(mean, R S^2 R^T)`` and whose scales are
  divided by ``0.8 * split_n``;
- **prunes** Gaussians with opacity below ``prune_opa`` and, once the first opacity reset has
  happened, those larger than ``prune_scale3d * scene_extent``.

Every ``reset_every`` steps the opacities are clamped to ``reset_opacity``. Growth never takes
the model past ``max_gaussians``: when it would, the highest-gradient candidates that fit win.

``DensifyConfig.strategy = "mcmc"`` replaces all of this with the MCMC strategy
(``fieldkit/splats/mcmc.py``, same interface, made by :func:`make_densifier`).

The parameters live in an ``nn.ParameterDict`` (``means [N, 3]``, ``scales [N, 3]``,
``quats [N, 4]``, ``opacities [N]``, ``sh0 [N, 1, 3]``, ``shN [N, K-1, 3]``, ...) optimised by
one ``torch.optim.Adam``. :func:`select_gaussians` and :func:`append_gaussians` change the
number of rows of every parameter and keep the optimiser consistent: new ``nn.Parameter``
objects replace the old ones in the dict, in the param groups and as keys of the Adam state,
whose per-row moments follow their rows (new rows start at zero, ``step`` is unchanged).

Typical loop::

    loss.backward()
    densifier.accumulate(means2d.grad, radii, width, height)
    optimizer.step(); optimizer.zero_grad()
    densifier.step(step, params, optimizer)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor, nn

from fieldkit.splats.transform import quat_to_rotmat


STRATEGIES = ("default", "mcmc")
"""How the Gaussians change during training (``DensifyConfig.strategy``)."""


@dataclass
class DensifyConfig:
    """When and how the Gaussians are cloned, split, pruned and reset."""

    grow_grad2d: float = 0.0002
    """Grow Gaussians whose mean view-space gradient norm exceeds this, in NDC units (the
    pixel gradient scaled by ``[W/2, H/2]``, as 3DGS / gsplat)."""
    grow_scale3d: float = 0.01
    """Relative to the scene extent: high-gradient Gaussians whose max scale is <= this
    ``* extent`` are cloned, larger ones are split."""
    prune_opa: float = 0.005
    """Prune Gaussians whose opacity (after sigmoid) is below this."""
    prune_scale3d: float = 0.1
    """After the first opacity reset, prune Gaussians whose max scale exceeds this ``* extent``."""
    refine_start: int = 500
    """Refine (grow + prune) only at steps strictly after this one."""
    refine_stop: int = 15000
    """No refinement and no opacity reset at or after this step."""
    refine_every: int = 100
    """Refine at steps that are multiples of this."""
    reset_every: int = 3000
    """Reset opacities at (non-zero) steps that are multiples of this."""
    reset_opacity: float = 0.01
    """Opacities (after sigmoid) are clamped to at most this value at a reset."""
    max_gaussians: int = 1_000_000
    """Hard cap on the number of Gaussians: growth never exceeds it."""
    split_n: int = 2
    """Number of children a split Gaussian is replaced by."""
    strategy: Literal["default", "mcmc"] = "default"
    """``default``: the above (3DGS). ``mcmc``: 3DGS as MCMC (gsplat's MCMCStrategy,
    ``fieldkit/splats/mcmc.py``): dead Gaussians move onto live ones, each refinement adds
    ``mcmc_growth`` more up to ``max_gaussians``, noise moves the faint ones; the refine steps
    apply, the gradient, prune and reset settings do not."""
    mcmc_min_opacity: float = 0.005
    """mcmc: Gaussians at most this opaque are dead and relocated."""
    mcmc_growth: float = 0.05
    """mcmc: each refinement adds this fraction of the Gaussians (up to max_gaussians)."""
    mcmc_noise_lr: float = 5e5
    """mcmc: the noise on the means is the means' learning rate x this, shaped by each
    Gaussian's covariance."""
    mcmc_opacity_reg: float = 0.01
    """mcmc: weight of the mean opacity in the loss."""
    mcmc_scale_reg: float = 0.01
    """mcmc: weight of the mean scale (the model's box units) in the loss."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not "
                             f"{self.strategy!r}")
        if self.split_n < 2:
            raise ValueError(f"split_n must be >= 2, got {self.split_n}")
        if not 0.0 < self.reset_opacity < 1.0:
            raise ValueError(f"reset_opacity must be in (0, 1), got {self.reset_opacity}")
        if self.refine_every < 1 or self.reset_every < 1:
            raise ValueError("refine_every and reset_every must be >= 1")
        if self.max_gaussians < 1:
            raise ValueError(f"max_gaussians must be >= 1, got {self.max_gaussians}")


def _swap_parameters(params: nn.ParameterDict, optimizer: torch.optim.Optimizer,
                     param_fn: Callable[[str, Tensor], Tensor],
                     row_fn: Callable[[Tensor], Tensor]) -> None:
    """Replace every parameter by ``param_fn(name, old)`` and carry its optimiser state.

    Optimiser state tensors shaped like the parameter (Adam's ``exp_avg``, ``exp_avg_sq``,
    ``max_exp_avg_sq``) and the gradient go through ``row_fn``; the rest (``step``) is kept.
    Groups are matched to parameters by identity, so group names are not required.
    """
    old = dict(params.items())
    with torch.no_grad():
        for name, p in old.items():
            new_p = nn.Parameter(param_fn(name, p.detach()), requires_grad=p.requires_grad)
            if p.grad is not None:
                new_p.grad = row_fn(p.grad)
            params[name] = new_p
        replaced = {id(p): (p, params[name]) for name, p in old.items()}
        for group in optimizer.param_groups:
            for i, p in enumerate(group["params"]):
                if id(p) not in replaced:
                    continue
                old_p, new_p = replaced[id(p)]
                state = optimizer.state.pop(old_p, None)
                if state:
                    optimizer.state[new_p] = {
                        k: row_fn(v) if torch.is_tensor(v) and v.shape == old_p.shape else v
                        for k, v in state.items()}
                group["params"][i] = new_p


def select_gaussians(params: nn.ParameterDict, optimizer: torch.optim.Optimizer,
                     keep: Tensor) -> None:
    """Keep only the rows ``keep`` (bool [N]) of every parameter and of its Adam moments.

    Each parameter is replaced by a new ``nn.Parameter`` in ``params``, in its param group and
    as the key of its optimiser state (absent before the first ``optimizer.step()``: fine).
    """
    n = params["means"].shape[0]
    if keep.dtype != torch.bool or keep.shape != (n,):
        raise ValueError(f"keep must be a bool tensor [{n}], got {keep.dtype} {tuple(keep.shape)}")
    keep = keep.to(params["means"].device)
    _swap_parameters(params, optimizer, lambda _, p: p[keep], lambda v: v[keep])


def append_gaussians(params: nn.ParameterDict, optimizer: torch.optim.Optimizer,
                     new: dict[str, Tensor]) -> None:
    """Append the rows ``new[name]`` ([M, ...], every key of ``params``) to the parameters.

    The new rows' Adam moments (and gradients, if any) start at zero; parameters are replaced
    as in :func:`select_gaussians`.
    """
    if set(new) != set(params.keys()):
        raise ValueError(f"new must have exactly the keys {sorted(params.keys())}, "
                         f"got {sorted(new)}")
    m = new["means"].shape[0]
    for name, p in params.items():
        if new[name].shape != (m,) + tuple(p.shape[1:]):
            raise ValueError(f"new[{name!r}] has shape {tuple(new[name].shape)}, expected "
                             f"{(m,) + tuple(p.shape[1:])}")

    def param_fn(name: str, p: Tensor) -> Tensor:
        return torch.cat([p, new[name].detach().to(p)])

    def row_fn(v: Tensor) -> Tensor:
        return torch.cat([v, v.new_zeros((m,) + tuple(v.shape[1:]))])

    _swap_parameters(params, optimizer, param_fn, row_fn)


class Densifier:
    """Clone / split / prune / opacity reset of a Gaussian-splat model (see module docstring).

    ``scene_extent`` is the radius of the scene in world units; the 3D scale thresholds are
    relative to it. Accumulators: ``grad2d [N]`` (summed NDC gradient norms) and ``count [N]``
    (renders in which each Gaussian was visible); ``None`` means all zero.
    """

    def __init__(self, config: DensifyConfig, scene_extent: float) -> None:
        self.config = config
        self.scene_extent = float(scene_extent)
        self.grad2d: Tensor | None = None
        self.count: Tensor | None = None

    def accumulate(self, means2d_grad: Tensor, radii: Tensor, width: int, height: int) -> None:
        """Add the view-space gradient norms of one render for the visible Gaussians.

        ``means2d_grad`` [N, 2] (or [C, N, 2] for C cameras) is the pixel-space gradient of the
        projected means; ``radii`` [N] (or [C, N], or per-axis [..., N, 2]) is > 0 where the
        Gaussian is visible. The gradient is converted to NDC by scaling with ``[W/2, H/2]``.
        """
        grad = means2d_grad.detach()
        n = grad.shape[-2]
        visible = radii.detach() > 0
        if visible.shape == grad.shape:
            visible = visible.all(-1)  # per-axis radii [..., N, 2]
        grad, visible = grad.reshape(-1, n, 2), visible.reshape(-1, n)
        scale = grad.new_tensor([width / 2.0, height / 2.0])
        norms = (grad * scale).norm(dim=-1) * visible  # [C, N]
        if self.grad2d is None or self.count is None:
            self.grad2d = torch.zeros(n, device=grad.device, dtype=torch.float32)
            self.count = torch.zeros(n, device=grad.device, dtype=torch.int64)
        if self.grad2d.shape[0] != n:
            raise ValueError(f"got gradients for {n} Gaussians but the accumulators hold "
                             f"{self.grad2d.shape[0]}")
        self.grad2d += norms.sum(0).float()
        self.count += visible.sum(0)

    def loss(self, params: nn.ParameterDict) -> Tensor | None:
        """A term to add to the image loss (the MCMC strategy's regularisation; none here)."""
        return None

    def after_step(self, params: nn.ParameterDict, means_lr: float) -> None:
        """Called after every optimiser step (the MCMC strategy's noise; nothing here)."""

    def reset_accumulators(self) -> None:
        """Forget the accumulated gradients and visibility counts."""
        self.grad2d = None
        self.count = None

    def mean_grad2d(self, n: int, device: torch.device) -> Tensor:
        """[N] mean NDC gradient norm over the renders in which each Gaussian was visible."""
        if self.grad2d is None or self.count is None:
            return torch.zeros(n, device=device)
        if self.grad2d.shape[0] != n:
            raise RuntimeError(f"the accumulators hold {self.grad2d.shape[0]} Gaussians but the "
                               f"model has {n}: accumulate() and step() got different models")
        return (self.grad2d / self.count.clamp_min(1)).to(device)

    def step(self, step: int, params: nn.ParameterDict,
             optimizer: torch.optim.Optimizer, allow_reset: bool = True) -> dict:
        """Refine and/or reset opacities if ``step`` calls for it (call after optimizer.step()).

        ``allow_reset=False`` skips an opacity reset the step would call for.
        Returns ``{"cloned", "split", "pruned", "reset", "n"}``: Gaussians cloned, Gaussians
        split (each replaced by ``split_n``), Gaussians pruned, whether opacities were reset,
        and the number N of Gaussians afterwards.
        """
        cfg = self.config
        out = {"cloned": 0, "split": 0, "pruned": 0, "reset": False, "n": 0}
        if step < cfg.refine_stop:
            if step > cfg.refine_start and step % cfg.refine_every == 0:
                out["cloned"], out["split"] = self._grow(params, optimizer)
                out["pruned"] = self._prune(step, params, optimizer)
                self.reset_accumulators()
            if allow_reset and step > 0 and step % cfg.reset_every == 0:
                self._reset_opacity(params, optimizer)
                out["reset"] = True
        out["n"] = int(params["means"].shape[0])
        return out

    def _max_scale(self, params: nn.ParameterDict) -> Tensor:
        """[N] largest standard deviation of each Gaussian, world units."""
        return params["scales"].detach().exp().amax(dim=-1)

    def _grow(self, params: nn.ParameterDict, optimizer: torch.optim.Optimizer) -> tuple[int, int]:
        cfg = self.config
        means = params["means"].detach()
        n = means.shape[0]
        grads = self.mean_grad2d(n, means.device)
        high = grads > cfg.grow_grad2d
        small = self._max_scale(params) <= cfg.grow_scale3d * self.scene_extent
        clone, split = self._fit_cap(grads, high & small, high & ~small)
        n_clone, n_split = int(clone.sum()), int(split.sum())
        if n_clone + n_split == 0:
            return 0, 0
        with torch.no_grad():
            copies = {k: p.detach()[clone] for k, p in params.items()}
            children = self._split_children(params, split)
            new = {k: torch.cat([copies[k], children[k]]) for k in copies}
        if n_split:
            select_gaussians(params, optimizer, ~split)
        append_gaussians(params, optimizer, new)
        return n_clone, n_split

    def _fit_cap(self, grads: Tensor, clone: Tensor, split: Tensor) -> tuple[Tensor, Tensor]:
        """Restrict the clone / split masks ([N] bool) so that growth stays within the cap.

        Candidates are taken in decreasing gradient order while they fit (a clone adds 1
        Gaussian, a split ``split_n - 1``); once a split no longer fits, the remaining room is
        filled with the next clones, so the cap is reached exactly whenever candidates allow.
        """
        cost = clone.long() + split.long() * (self.config.split_n - 1)
        room = max(self.config.max_gaussians - clone.shape[0], 0)
        if int(cost.sum()) <= room:
            return clone, split
        cand = torch.nonzero(clone | split).squeeze(1)
        order = cand[torch.argsort(grads[cand], descending=True, stable=True)]
        take = torch.cumsum(cost[order], 0) <= room
        left = room - int(cost[order[take]].sum())
        rest = order[~take]
        chosen = torch.cat([order[take], rest[clone[rest]][:left]])
        mask = torch.zeros_like(clone)
        mask[chosen] = True
        return clone & mask, split & mask

    def _split_children(self, params: nn.ParameterDict, split: Tensor) -> dict[str, Tensor]:
        """Rows [split_n * M, ...] replacing the M Gaussians of ``split`` (child-major order)."""
        k = self.config.split_n
        rows = {name: p.detach()[split] for name, p in params.items()}
        means, scales = rows["means"], rows["scales"]
        rot = quat_to_rotmat(rows["quats"])  # [M, 3, 3]
        z = torch.randn((k,) + tuple(means.shape), device=means.device, dtype=means.dtype)
        offsets = torch.einsum("mij,mj,kmj->kmi", rot, scales.exp(), z)  # [k, M, 3]
        out = {name: v.repeat(k, *([1] * (v.dim() - 1))) for name, v in rows.items()}
        out["means"] = (means[None] + offsets).reshape(-1, 3)
        out["scales"] = (scales - math.log(0.8 * k)).repeat(k, 1)
        return out

    def _prune(self, step: int, params: nn.ParameterDict,
               optimizer: torch.optim.Optimizer) -> int:
        cfg = self.config
        prune = torch.sigmoid(params["opacities"].detach()) < cfg.prune_opa
        if step > cfg.reset_every:
            prune |= self._max_scale(params) > cfg.prune_scale3d * self.scene_extent
        n_prune = int(prune.sum())
        if n_prune:
            select_gaussians(params, optimizer, ~prune)
        return n_prune

    def _reset_opacity(self, params: nn.ParameterDict, optimizer: torch.optim.Optimizer) -> None:
        """Clamp opacity logits to logit(reset_opacity); zero the Adam moments of those rows."""
        value = math.log(self.config.reset_opacity / (1.0 - self.config.reset_opacity))
        p = params["opacities"]
        with torch.no_grad():
            clamped = p > value
            p.clamp_(max=value)
            state = optimizer.state.get(p, {})
            for v in state.values():
                if torch.is_tensor(v) and v.shape == p.shape:
                    v[clamped] = 0

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors to resume from: ``scene_extent`` and, when non-empty, ``grad2d [N]`` and
        ``count [N]`` (copies)."""
        out = {"scene_extent": torch.tensor(self.scene_extent, dtype=torch.float64)}
        if self.grad2d is not None and self.count is not None:
            out["grad2d"] = self.grad2d.detach().clone()
            out["count"] = self.count.detach().clone()
        return out

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if ("grad2d" in state) != ("count" in state):
            raise ValueError("state must hold both 'grad2d' and 'count' or neither")
        if "scene_extent" in state:
            self.scene_extent = float(state["scene_extent"])
        if "grad2d" in state:
            self.grad2d = state["grad2d"].detach().clone().float()
            self.count = state["count"].detach().clone().long()
        else:
            self.reset_accumulators()


def make_densifier(config: DensifyConfig, scene_extent: float):
    """The densifier of ``config.strategy``: :class:`Densifier`, or the MCMC strategy's
    ``McmcDensifier`` (same interface)."""
    if config.strategy == "mcmc":
        from fieldkit.splats.mcmc import McmcDensifier

        return McmcDensifier(config, scene_extent)
    return Densifier(config, scene_extent)
