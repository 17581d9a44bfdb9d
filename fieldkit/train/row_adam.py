"""Adam applied row by row, for per-image parameters (``--pose-opt``, ``--appearance``).

A parameter [N, ...] holds one row per camera. A splat step sees one camera, and torch's Adam
would keep moving every other row on its momentum (about 30 learning rates per gradient, all
in one direction); here only the rows whose gradient is not zero move, each with its own step
count and bias correction, so a row moves by about one learning rate each time its camera is
seen. Where every row has a gradient every step (ray batches), it is torch's Adam with L2
weight decay.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class RowAdam:
    """Row-wise Adam on ``param`` [N, ...] (see module docstring)."""

    betas = (0.9, 0.999)
    eps = 1e-15

    def __init__(self, param: nn.Parameter, lr: float, weight_decay: float):
        self.param = param
        self.base_lr, self.lr, self.weight_decay = float(lr), float(lr), float(weight_decay)
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.steps = torch.zeros(len(param), dtype=torch.float64, device=param.device)
        """[N] Adam steps each row has taken."""

    def set_lr_factor(self, factor: float) -> None:
        self.lr = self.base_lr * factor

    def zero_grad(self) -> None:
        self.param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """Adam on the rows whose gradient is not zero (bias correction per row)."""
        p = self.param
        if p.grad is None:
            return
        rows = torch.nonzero(p.grad.reshape(len(p), -1).abs().sum(-1) > 0).squeeze(1)
        if len(rows) == 0:
            return
        b1, b2 = self.betas
        g = p.grad[rows] + self.weight_decay * p[rows]
        m = self.exp_avg[rows].mul_(b1).add_(g, alpha=1 - b1)
        v = self.exp_avg_sq[rows].mul_(b2).addcmul_(g, g, value=1 - b2)
        t = self.steps[rows] + 1
        self.exp_avg[rows], self.exp_avg_sq[rows], self.steps[rows] = m, v, t
        shape = (-1,) + (1,) * (p.dim() - 1)
        m_hat = m / (1 - b1 ** t).to(m.dtype).view(shape)
        v_hat = v / (1 - b2 ** t).to(v.dtype).view(shape)
        p[rows] -= self.lr * m_hat / (v_hat.sqrt() + self.eps)

    def state_tensors(self, prefix: str) -> dict[str, Tensor]:
        """The parameter and its optimiser state, as checkpoint tensors named ``prefix`` +
        delta / exp_avg / exp_avg_sq / steps."""
        return {f"{prefix}delta": self.param.detach().clone(),
                f"{prefix}exp_avg": self.exp_avg.clone(),
                f"{prefix}exp_avg_sq": self.exp_avg_sq.clone(), f"{prefix}steps": self.steps.clone()}

    def load_state_tensors(self, tensors: dict[str, Tensor], prefix: str) -> None:
        """Take back ``state_tensors`` (nothing under ``prefix``: the run was saved without
        this parameter, which keeps its zeros)."""
        if f"{prefix}delta" not in tensors:
            return
        dev = self.param.device
        with torch.no_grad():
            self.param.copy_(tensors[f"{prefix}delta"])
        self.exp_avg = tensors[f"{prefix}exp_avg"].to(dev).clone()
        self.exp_avg_sq = tensors[f"{prefix}exp_avg_sq"].to(dev).clone()
        self.steps = tensors[f"{prefix}steps"].to(dev).clone()
