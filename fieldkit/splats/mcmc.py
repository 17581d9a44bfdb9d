"""3D Gaussian Splatting as Markov chain Monte Carlo (Kheradmand et al. 2024), gsplat's
``MCMCStrategy`` written for fieldkit's trainer (``DensifyConfig.strategy = "mcmc"``).

The Gaussians are samples of the scene's distribution, and densification becomes moving
samples rather than cloning and splitting by gradient:

- **relocation:** every refinement, the dead Gaussians (opacity at most ``mcmc_min_opacity``)
  are moved onto live ones drawn with probability proportional to their opacity. A live
  Gaussian drawn ``N - 1`` times shares its place with ``N - 1`` copies; all ``N`` get the
  opacity and scale of ``relocation`` so that together they draw what it drew alone;
- **growth:** then ``mcmc_growth`` (5%) more Gaussians are added the same way, up to
  ``max_gaussians``, so the cap sets the final count;
- **noise:** after every optimiser step, each Gaussian's mean moves by noise shaped like its
  covariance, scaled by the means' learning rate x ``mcmc_noise_lr`` and by how transparent it
  is (a steep sigmoid of ``1 - opacity``): faint Gaussians explore, opaque ones stay;
- **regularisation:** ``mcmc_opacity_reg`` x mean opacity + ``mcmc_scale_reg`` x mean scale is
  added to the loss, so that unneeded Gaussians fade and die.

There are no opacity resets and no pruning: the number of Gaussians only grows, to the cap.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fieldkit.splats.transform import quat_to_rotmat

MAX_COPIES = 51
"""A Gaussian is shared by at most this many copies in one refinement (gsplat's ``n_max``)."""


def relocation(opacities: Tensor, scales: Tensor, copies: Tensor) -> tuple[Tensor, Tensor]:
    """opacities [M] in (0, 1), scales [M, 3] (standard deviations), copies [M] >= 1 (how many
    Gaussians will share each place) -> (opacities [M], scales [M, 3]) of each copy.

    ``N`` copies with opacity ``o' = 1 - (1 - o)^(1/N)`` composite to the original's opacity at
    its centre. The scale then keeps the opacity's integral along any line through the centre:
    ``int 1 - (1 - o' g'(x))^N dx = o int g(x) dx`` with ``g`` the unit-peak Gaussian profile,
    which gives ``s' = o s / sum_{j=1..N} C(N, j) (-1)^(j-1) o'^j / sqrt(j)`` (the paper's
    double sum, summed over its outer index). Evaluated in float64: the alternating terms
    reach ~1e6 for opacities near 1."""
    n = copies.clamp(1, MAX_COPIES).to(torch.float64)
    o = opacities.to(torch.float64)
    new_o = 1 - torch.pow(1 - o, 1 / n)
    j = torch.arange(1, MAX_COPIES + 1, dtype=torch.float64, device=o.device)    # [J]
    log_binom = (torch.lgamma(n[:, None] + 1) - torch.lgamma(j + 1)
                 - torch.lgamma((n[:, None] - j + 1).clamp_min(1)))              # [M, J]
    sign = torch.where(j % 2 == 1, 1.0, -1.0)
    terms = sign * torch.exp(log_binom) * new_o[:, None] ** j / j.sqrt()
    denom = (terms * (j <= n[:, None])).sum(1)
    new_s = (o / denom)[:, None] * scales.to(torch.float64)
    return new_o.to(opacities.dtype), new_s.to(scales.dtype)


class McmcDensifier:
    """The MCMC strategy, with :class:`fieldkit.splats.densify.Densifier`'s interface (see the
    module docstring); ``scene_extent`` is kept for the checkpoint only."""

    def __init__(self, config, scene_extent: float) -> None:
        self.config = config
        self.scene_extent = float(scene_extent)

    def accumulate(self, means2d_grad: Tensor, radii: Tensor, width: int, height: int) -> None:
        """MCMC does not use the view-space gradients."""

    def loss(self, params: nn.ParameterDict) -> Tensor:
        """The opacity and scale regularisation to add to the image loss."""
        c = self.config
        return c.mcmc_opacity_reg * torch.sigmoid(params["opacities"]).mean() + \
            c.mcmc_scale_reg * params["scales"].exp().mean()

    @torch.no_grad()
    def after_step(self, params: nn.ParameterDict, means_lr: float) -> None:
        """Move each mean by noise shaped like its covariance, mostly the faint ones'."""
        o = torch.sigmoid(params["opacities"])
        rot = quat_to_rotmat(params["quats"])                                   # [N, 3, 3]
        var = params["scales"].exp() ** 2                                       # [N, 3]
        covar = torch.einsum("nij,nj,nkj->nik", rot, var, rot)
        faint = torch.sigmoid(100 * ((1 - o) - 0.995))
        z = torch.randn_like(params["means"]) * (faint * means_lr * self.config.mcmc_noise_lr)[
            :, None]
        params["means"].add_(torch.einsum("nij,nj->ni", covar, z))

    def step(self, step: int, params: nn.ParameterDict, optimizer: torch.optim.Optimizer,
             allow_reset: bool = True) -> dict:
        """Relocate the dead and add new Gaussians if ``step`` is a refinement step (after
        optimizer.step()). Returns ``{"relocated", "added", "reset": False, "n"}``."""
        c = self.config
        out = {"relocated": 0, "added": 0, "reset": False, "n": 0}
        if c.refine_start < step < c.refine_stop and step % c.refine_every == 0:
            out["relocated"] = self._relocate(params, optimizer)
            out["added"] = self._add(params, optimizer)
        out["n"] = int(params["means"].shape[0])
        return out

    def _draw(self, params: nn.ParameterDict, among: Tensor, n: int) -> Tensor:
        """``n`` indices of Gaussians drawn from ``among`` ([K] indices), with replacement,
        in proportion to their opacity."""
        weight = torch.sigmoid(params["opacities"].detach()[among]).double()
        return among[torch.multinomial(weight / weight.sum(), n, replacement=True)]

    def _shared(self, params: nn.ParameterDict, optimizer, drawn: Tensor) -> None:
        """Give the drawn Gaussians the opacity and scale of their share (each is drawn
        ``k`` times: ``k + 1`` copies) and zero their Adam moments."""
        p = params
        copies = torch.bincount(drawn, minlength=len(p["means"]))[drawn] + 1
        o, s = relocation(torch.sigmoid(p["opacities"].detach()[drawn]),
                          p["scales"].detach()[drawn].exp(), copies)
        eps = torch.finfo(torch.float32).eps
        o = o.clamp(self.config.mcmc_min_opacity, 1 - eps)
        with torch.no_grad():
            p["opacities"][drawn] = torch.logit(o)
            p["scales"][drawn] = torch.log(s)
        _zero_moments(params, optimizer, drawn)

    def _relocate(self, params: nn.ParameterDict, optimizer) -> int:
        o = torch.sigmoid(params["opacities"].detach())
        dead = torch.nonzero(o <= self.config.mcmc_min_opacity)[:, 0]
        alive = torch.nonzero(o > self.config.mcmc_min_opacity)[:, 0]
        if len(dead) == 0 or len(alive) == 0:
            return 0
        drawn = self._draw(params, alive, len(dead))
        self._shared(params, optimizer, drawn)
        with torch.no_grad():
            for p in params.values():
                p[dead] = p[drawn]
        _zero_moments(params, optimizer, dead)
        return len(dead)

    def _add(self, params: nn.ParameterDict, optimizer) -> int:
        from fieldkit.splats.densify import append_gaussians

        n = len(params["means"])
        target = min(self.config.max_gaussians, int((1 + self.config.mcmc_growth) * n))
        if target <= n:
            return 0
        drawn = self._draw(params, torch.arange(n, device=params["means"].device), target - n)
        self._shared(params, optimizer, drawn)
        append_gaussians(params, optimizer, {k: p.detach()[drawn] for k, p in params.items()})
        return target - n

    def state_dict(self) -> dict[str, Tensor]:
        return {"scene_extent": torch.tensor(self.scene_extent, dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if "scene_extent" in state:
            self.scene_extent = float(state["scene_extent"])


def _zero_moments(params: nn.ParameterDict, optimizer: torch.optim.Optimizer,
                  rows: Tensor) -> None:
    """Zero the Adam moments of ``rows`` of every parameter (their history is another
    Gaussian's)."""
    for p in params.values():
        for v in optimizer.state.get(p, {}).values():
            if torch.is_tensor(v) and v.shape == p.shape:
                v[rows] = 0
