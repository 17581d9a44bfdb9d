"""Adam applied row by row, for per-image parameters (``--pose-opt``, ``--appearance``).

A row is ``row_size`` consecutive values of the parameter: a camera's pose correction, or one
cell of a camera's appearance grid (a ray batch touches a third of those cells, and updating
only them took a bilateral step on fox from 24 to ~10 ms).

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
    """Row-wise Adam on ``param`` [N, ...], its rows ``row_size`` values each (default: a row
    per index of the first dimension; see module docstring)."""

    betas = (0.9, 0.999)
    eps = 1e-15

    def __init__(self, param: nn.Parameter, lr: float, weight_decay: float,
                 row_size: int | None = None):
        self.param = param
        self.row_size = int(row_size or param[0].numel())
        self.base_lr, self.lr, self.weight_decay = float(lr), float(lr), float(weight_decay)
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.steps = torch.zeros(param.numel() // self.row_size, dtype=torch.float64,
                                 device=param.device)
        """[rows] Adam steps each row has taken."""

    def set_lr_factor(self, factor: float) -> None:
        self.lr = self.base_lr * factor

    def zero_grad(self) -> None:
        self.param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """Adam on the rows whose gradient is not zero (bias correction per row)."""
        if self.param.grad is None:
            return
        size = self.row_size
        p, grad = self.param.view(-1, size), self.param.grad.reshape(-1, size)
        rows = torch.nonzero(grad.abs().sum(-1) > 0).squeeze(1)
        if len(rows) == 0:
            return
        b1, b2 = self.betas
        avg, avg_sq = self.exp_avg.view(-1, size), self.exp_avg_sq.view(-1, size)
        g = grad[rows] + self.weight_decay * p[rows]
        m = avg[rows].mul_(b1).add_(g, alpha=1 - b1)
        v = avg_sq[rows].mul_(b2).addcmul_(g, g, value=1 - b2)
        t = self.steps[rows] + 1
        avg[rows], avg_sq[rows], self.steps[rows] = m, v, t
        m_hat = m / (1 - b1 ** t).to(m.dtype)[:, None]
        v_hat = v / (1 - b2 ** t).to(v.dtype)[:, None]
        p[rows] -= self.lr * m_hat / (v_hat.sqrt() + self.eps)

    def state_tensors(self, prefix: str) -> dict[str, Tensor]:
        """The parameter and its optimiser state, as checkpoint tensors named ``prefix`` +
        delta / exp_avg / exp_avg_sq / steps."""
        return {f"{prefix}delta": self.param.detach().clone(),
                f"{prefix}exp_avg": self.exp_avg.clone(),
                f"{prefix}exp_avg_sq": self.exp_avg_sq.clone(),
                f"{prefix}steps": self.steps.clone()}

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
