"""The trainers' Adam: fused where torch has the kernel, the same updates as torch's default."""
from __future__ import annotations

import torch

from fieldkit.train.optim import make_adam


def _params(seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(300, 4, generator=g)),
            torch.nn.Parameter(torch.randn(17, generator=g))]


def test_fused_on_the_cpu_and_the_same_updates_as_the_default():
    fused_params, ref_params = _params(0), _params(0)
    groups = [{"params": fused_params[:1], "lr": 1e-2}, {"params": fused_params[1:], "lr": 3e-3}]
    opt = make_adam(groups, 1e-2, betas=(0.9, 0.99))
    assert opt.defaults["fused"] is True
    ref = torch.optim.Adam([{"params": ref_params[:1], "lr": 1e-2},
                            {"params": ref_params[1:], "lr": 3e-3}],
                           lr=1e-2, betas=(0.9, 0.99), eps=1e-15, foreach=True)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        grads = [torch.randn(p.shape, generator=g) * 1e-3 for p in fused_params]
        for params, o in ((fused_params, opt), (ref_params, ref)):
            for p, grad in zip(params, grads):
                p.grad = grad.clone()
            o.step()
    for a, b, start in zip(fused_params, ref_params, _params(0)):
        assert (a - start).abs().max() > 1e-3   # it moved
        # the two kernels round differently (float32): 20 steps of lr <= 1e-2
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    # the state a checkpoint saves has the usual keys
    assert set(opt.state[fused_params[0]]) == {"step", "exp_avg", "exp_avg_sq"}


def test_no_parameters_is_not_fused():
    opt = make_adam([{"params": [], "lr": 1e-2}], 1e-2, betas=(0.9, 0.99))
    assert not opt.defaults["fused"]
