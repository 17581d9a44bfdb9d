"""Adaptive density control: optimiser surgery, clone / split / prune, the cap, opacity reset,
resumable state and a tiny end-to-end loop."""
from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from fieldkit.splats.densify import (DensifyConfig, Densifier, append_gaussians,
                                     select_gaussians)
from fieldkit.splats.transform import quat_to_rotmat

W, H = 64, 48
LRS = {"means": 1e-3, "scales": 5e-3, "quats": 1e-3, "opacities": 5e-2, "sh0": 2.5e-3,
       "shN": 1e-4}


def make_params(n: int, sh_rest: int = 3, scale: float = 0.001, seed: int = 0
                ) -> nn.ParameterDict:
    """n Gaussians: sh0[:, 0, 0] = i is an identity tag; opacities high, scales small."""
    g = torch.Generator().manual_seed(seed)
    return nn.ParameterDict({
        "means": nn.Parameter(torch.randn(n, 3, generator=g)),
        "scales": nn.Parameter(torch.full((n, 3), math.log(scale))),
        "quats": nn.Parameter(torch.randn(n, 4, generator=g)),
        "opacities": nn.Parameter(torch.full((n,), 2.0)),
        "sh0": nn.Parameter(torch.arange(n, dtype=torch.float32)[:, None, None].repeat(1, 1, 3)),
        "shN": nn.Parameter(torch.zeros(n, sh_rest, 3)),
    })


def make_optimizer(params: nn.ParameterDict) -> torch.optim.Adam:
    return torch.optim.Adam([{"params": [p], "lr": LRS[k], "name": k}
                             for k, p in params.items()], eps=1e-15)


def fill_state(params: nn.ParameterDict, opt: torch.optim.Adam) -> None:
    """Take one Adam step, then overwrite the moments with row tags: row i -> i (+0.5)."""
    for p in params.values():
        p.grad = torch.ones_like(p)
    opt.step()
    for p in params.values():
        rows = torch.arange(p.shape[0], dtype=p.dtype).reshape(-1, *[1] * (p.dim() - 1))
        opt.state[p]["exp_avg"].copy_(rows.expand_as(p))
        opt.state[p]["exp_avg_sq"].copy_((rows + 0.5).expand_as(p))


def check_consistent(params: nn.ParameterDict, opt: torch.optim.Adam) -> None:
    """The optimiser holds exactly the dict's parameter objects, with matching state shapes."""
    for group in opt.param_groups:
        assert len(group["params"]) == 1
        assert group["params"][0] is params[group["name"]]
    assert {id(p) for p in opt.state} <= {id(p) for p in params.values()}
    for p in params.values():
        for k in ("exp_avg", "exp_avg_sq"):
            if p in opt.state:
                assert opt.state[p][k].shape == p.shape


def tags(params: nn.ParameterDict) -> list[int]:
    return params["sh0"][:, 0, 0].round().long().tolist()


def accumulate(d: Densifier, grads_px: Tensor, radii: Tensor | None = None) -> None:
    """One render whose x pixel gradient per Gaussian is grads_px [N]."""
    g = torch.stack([grads_px, torch.zeros_like(grads_px)], -1)
    d.accumulate(g, torch.ones(len(grads_px)) if radii is None else radii, W, H)


def test_select_and_append_carry_adam_rows() -> None:
    params = make_params(5)
    opt = make_optimizer(params)
    fill_state(params, opt)
    old = {k: p.detach().clone() for k, p in params.items()}
    steps = {k: opt.state[p]["step"].clone() for k, p in params.items()}

    keep = torch.tensor([True, False, True, True, False])
    select_gaussians(params, opt, keep)
    check_consistent(params, opt)
    for k, p in params.items():
        torch.testing.assert_close(p.detach(), old[k][keep])
        s = opt.state[p]
        expected = torch.tensor([0.0, 2, 3]).reshape(-1, *[1] * (p.dim() - 1)).expand_as(p)
        torch.testing.assert_close(s["exp_avg"], expected)
        torch.testing.assert_close(s["exp_avg_sq"], expected + 0.5)
        torch.testing.assert_close(s["step"], steps[k])  # step unchanged

    new = {k: torch.full((2,) + tuple(p.shape[1:]), 7.0) for k, p in params.items()}
    append_gaussians(params, opt, new)
    check_consistent(params, opt)
    for k, p in params.items():
        assert p.shape[0] == 5
        torch.testing.assert_close(p.detach()[:3], old[k][keep])
        torch.testing.assert_close(p.detach()[3:], new[k])
        s = opt.state[p]
        expected = torch.tensor([0.0, 2, 3]).reshape(-1, *[1] * (p.dim() - 1))
        torch.testing.assert_close(s["exp_avg"][:3], expected.expand_as(p[:3]))
        torch.testing.assert_close(s["exp_avg_sq"][:3], (expected + 0.5).expand_as(p[:3]))
        assert (s["exp_avg"][3:] == 0).all() and (s["exp_avg_sq"][3:] == 0).all()

    # the optimiser updates the new objects
    before = params["means"].detach().clone()
    for p in params.values():
        p.grad = torch.ones_like(p)
    opt.step()
    assert not torch.equal(params["means"].detach(), before)


def test_surgery_before_first_step_and_empty_shn() -> None:
    params = make_params(4, sh_rest=0)
    opt = make_optimizer(params)
    select_gaussians(params, opt, torch.tensor([True, True, False, True]))
    append_gaussians(params, opt, {k: p.detach()[:1].clone() for k, p in params.items()})
    check_consistent(params, opt)
    assert len(opt.state) == 0 and params["shN"].shape == (4, 0, 3)
    assert tags(params) == [0, 1, 3, 0]
    sum(p.sum() for p in params.values()).backward()
    opt.step()
    assert len(opt.state) == 6


def test_surgery_rejects_bad_input() -> None:
    params = make_params(3)
    opt = make_optimizer(params)
    with pytest.raises(ValueError):
        select_gaussians(params, opt, torch.tensor([1, 0, 1]))
    with pytest.raises(ValueError):
        append_gaussians(params, opt, {"means": torch.zeros(1, 3)})


def test_accumulate_ndc_and_visibility() -> None:
    d = Densifier(DensifyConfig(), scene_extent=1.0)
    grad = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]])
    d.accumulate(grad, torch.tensor([2, 1, 0]), W, H)
    d.accumulate(grad, torch.tensor([1, 0, 0]), W, H)
    torch.testing.assert_close(d.grad2d, torch.tensor([2 * W / 2, H / 2, 0.0]))
    assert d.count.tolist() == [2, 1, 0]
    torch.testing.assert_close(d.mean_grad2d(3, torch.device("cpu")),
                               torch.tensor([W / 2, H / 2, 0.0]))
    with pytest.raises(ValueError):
        d.accumulate(torch.zeros(4, 2), torch.ones(4), W, H)
    # several cameras [C, N, 2] with [C, N] radii, and per-axis radii [N, 2]
    d.reset_accumulators()
    d.accumulate(torch.stack([grad, grad]), torch.tensor([[1, 0, 1], [1, 1, 0]]), W, H)
    d.accumulate(grad, torch.tensor([[1, 1], [0, 0], [2, 3]]), W, H)
    torch.testing.assert_close(d.grad2d, torch.tensor([3 * W / 2, H / 2, 2 * math.hypot(3 * W / 2, 4 * H / 2)]))
    assert d.count.tolist() == [3, 1, 2]


def test_clone_split_prune() -> None:
    torch.manual_seed(0)
    cfg = DensifyConfig(refine_start=0, refine_every=10, grow_grad2d=1.0, grow_scale3d=0.01,
                        prune_opa=0.05, split_n=3)
    params = make_params(5)
    with torch.no_grad():
        params["scales"][3] = torch.log(torch.tensor([0.5, 0.1, 0.02]))  # large -> split
        params["quats"][3] = torch.tensor([0.9, 0.3, -0.2, 0.4])
        params["opacities"][4] = -5.0  # sigmoid ~ 0.0067 < 0.05 -> pruned
    opt = make_optimizer(params)
    fill_state(params, opt)
    old = {k: p.detach().clone() for k, p in params.items()}
    d = Densifier(cfg, scene_extent=2.0)
    # mean NDC grads: [0.5, 2, 0.5, 2, 0] -> 1 cloned (small), 3 split (large)
    accumulate(d, torch.tensor([0.5, 2.0, 0.5, 2.0, 0.0]) / (W / 2))
    assert d.step(5, params, opt) == {"cloned": 0, "split": 0, "pruned": 0, "reset": False,
                                      "n": 5}  # not a refine step
    out = d.step(10, params, opt)
    assert out == {"cloned": 1, "split": 1, "pruned": 1, "reset": False, "n": 7}
    check_consistent(params, opt)
    # kept: 0, 1, 2 (4 pruned, 3 replaced), then the clone of 1, then 3 children of 3
    assert tags(params) == [0, 1, 2, 1, 3, 3, 3]
    for k in old:
        torch.testing.assert_close(params[k].detach()[3], old[k][1])  # exact clone
        assert (opt.state[params[k]]["exp_avg"][3:] == 0).all()
        torch.testing.assert_close(opt.state[params[k]]["exp_avg"][1], old[k][1] * 0 + 1)
    children = params["means"].detach()[4:]
    torch.testing.assert_close(params["scales"].detach()[4:],
                               (old["scales"][3] - math.log(0.8 * 3)).expand(3, 3))
    torch.testing.assert_close(params["quats"].detach()[4:], old["quats"][3].expand(3, 4))
    # children lie within a few sigma of the parent in its own frame
    rot = quat_to_rotmat(old["quats"][3])
    local = (children - old["means"][3]) @ rot / old["scales"][3].exp()
    assert local.abs().max() < 5 and not torch.allclose(children[0], children[1])
    assert d.grad2d is None  # accumulators reset after refining


def test_split_samples_follow_the_covariance() -> None:
    torch.manual_seed(1)
    cfg = DensifyConfig(refine_start=0, refine_every=1, grow_grad2d=0.0, split_n=400,
                        prune_opa=0.0)
    params = make_params(1)
    with torch.no_grad():
        params["scales"][0] = torch.log(torch.tensor([1.0, 0.2, 0.05]))
        params["quats"][0] = torch.tensor([0.8, 0.1, 0.5, -0.3])
    opt = make_optimizer(params)
    d = Densifier(cfg, scene_extent=1.0)
    accumulate(d, torch.ones(1))
    d.step(1, params, opt)
    rot = quat_to_rotmat(params["quats"].detach()[0])
    x = params["means"].detach() - make_params(1)["means"].detach()[0]
    std = (x @ rot).std(0)  # spread along the parent's axes
    torch.testing.assert_close(std, torch.tensor([1.0, 0.2, 0.05]), rtol=0.15, atol=0.0)


def test_prune_large_only_after_first_reset() -> None:
    cfg = DensifyConfig(refine_start=0, refine_every=10, reset_every=100, grow_grad2d=1e9,
                        prune_scale3d=0.1)
    params = make_params(3)
    with torch.no_grad():
        params["scales"][1] = math.log(0.5)  # > 0.1 * extent 2
    opt = make_optimizer(params)
    d = Densifier(cfg, scene_extent=2.0)
    assert d.step(50, params, opt)["pruned"] == 0
    out = d.step(110, params, opt)
    assert out["pruned"] == 1 and tags(params) == [0, 2]


@pytest.mark.parametrize("split_n", [2, 3])
def test_cap_grows_highest_gradients_exactly_to_cap(split_n: int) -> None:
    n = 6
    cfg = DensifyConfig(refine_start=0, refine_every=1, grow_grad2d=0.5, grow_scale3d=0.01,
                        max_gaussians=n + 3, split_n=split_n)
    params = make_params(n)
    with torch.no_grad():
        params["scales"][[1, 2, 4]] = math.log(0.5)  # large -> split candidates
    opt = make_optimizer(params)
    d = Densifier(cfg, scene_extent=1.0)
    # gradient ranking: 2 (split), 4 (split), 0 (clone), 3 (clone), 5 (clone); 1 below threshold
    accumulate(d, torch.tensor([3.0, 0.1, 5.0, 2.0, 4.0, 1.0]) / (W / 2))
    out = d.step(1, params, opt)
    assert out["n"] == cfg.max_gaussians == len(params["means"])
    t = tags(params)
    if split_n == 2:  # every candidate costs one: the top three
        assert (out["cloned"], out["split"]) == (1, 2)
        assert sorted(t) == sorted([0, 1, 3, 5, 0, 2, 2, 4, 4])
    else:  # split 2 costs 2; split 4 no longer fits; the next clone (0) fills the last slot
        assert (out["cloned"], out["split"]) == (1, 1)
        assert sorted(t) == sorted([0, 1, 3, 4, 5, 0, 2, 2, 2])
    check_consistent(params, opt)
    # at the cap nothing grows any more
    accumulate(d, torch.full((len(params["means"]),), 10.0))
    assert d.step(2, params, opt)["n"] == cfg.max_gaussians


def test_opacity_reset_clamps_and_zeroes_moments() -> None:
    cfg = DensifyConfig(refine_start=1000, reset_every=30, reset_opacity=0.01)
    params = make_params(3)
    opt = make_optimizer(params)
    fill_state(params, opt)
    with torch.no_grad():
        params["opacities"].copy_(torch.tensor([3.0, -6.0, 0.0]))
    d = Densifier(cfg, scene_extent=1.0)
    assert d.step(0, params, opt)["reset"] is False
    out = d.step(30, params, opt)
    assert out["reset"] and out["n"] == 3
    logit = math.log(0.01 / 0.99)
    torch.testing.assert_close(params["opacities"].detach(), torch.tensor([logit, -6.0, logit]))
    s = opt.state[params["opacities"]]
    assert s["exp_avg"].tolist() == [0.0, 1.0, 0.0]
    assert s["exp_avg_sq"].tolist() == [0.0, 1.5, 0.0]
    assert d.step(cfg.refine_stop + 30 - cfg.refine_stop % 30, params, opt)["reset"] is False


def test_state_dict_round_trip(tmp_path) -> None:
    cfg = DensifyConfig(refine_start=0, refine_every=5, grow_grad2d=1.0)
    d1 = Densifier(cfg, scene_extent=3.0)
    empty = Densifier(cfg, scene_extent=1.0)
    empty.load_state_dict(d1.state_dict())
    assert empty.grad2d is None and empty.scene_extent == 3.0
    accumulate(d1, torch.tensor([0.0, 2.0, 0.5, 3.0]) / (W / 2))
    accumulate(d1, torch.tensor([0.1, 0.0, 0.5, 3.0]) / (W / 2), torch.tensor([1, 0, 1, 1]))
    torch.save(d1.state_dict(), tmp_path / "d.pt")
    d2 = Densifier(cfg, scene_extent=1.0)
    d2.load_state_dict(torch.load(tmp_path / "d.pt", weights_only=True))
    assert d2.scene_extent == 3.0
    torch.testing.assert_close(d2.grad2d, d1.grad2d)
    assert torch.equal(d2.count, d1.count)
    for d in (d1, d2):  # both continue identically
        accumulate(d, torch.tensor([1.0, 1.0, 1.0, 1.0]) / (W / 2))
    results = []
    for d in (d1, d2):
        params = make_params(4)
        opt = make_optimizer(params)
        torch.manual_seed(3)
        results.append((d.step(5, params, opt), {k: p.detach() for k, p in params.items()}))
    assert results[0][0] == results[1][0] and results[0][0]["cloned"] == 2
    for k in results[0][1]:
        assert torch.equal(results[0][1][k], results[1][1][k])


def test_end_to_end_toy_loop() -> None:
    torch.manual_seed(0)
    cfg = DensifyConfig(refine_start=1, refine_every=3, refine_stop=11, reset_every=6,
                        grow_grad2d=1e-12, max_gaussians=32)
    params = make_params(5)
    with torch.no_grad():
        params["scales"][:2] = math.log(0.05)  # split these, clone the rest
    opt = make_optimizer(params)
    d = Densifier(cfg, scene_extent=1.0)
    target = torch.zeros(2)
    history = []
    for step in range(12):
        means2d = params["means"][:, :2] * 10.0  # toy "projection", pixels
        means2d.retain_grad()
        radii = torch.ones(len(params["means"]))
        loss = ((means2d - target) ** 2).mean() + params["scales"].exp().mean() \
            + params["quats"].square().mean() + 0.0 * params["opacities"].sum() \
            + params["sh0"].square().mean() + params["shN"].square().mean()
        opt.zero_grad()
        loss.backward()
        d.accumulate(means2d.grad, radii, W, H)
        opt.step()
        out = d.step(step, params, opt)
        check_consistent(params, opt)
        history.append((out["n"], out["reset"]))
    ns = [n for n, _ in history]
    assert ns == [5] * 3 + [10] * 3 + [20] * 3 + [32] * 3
    assert [s for s, (_, r) in enumerate(history) if r] == [6]
    assert torch.isfinite(params["means"]).all()
