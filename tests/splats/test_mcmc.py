"""The MCMC densification strategy: the relocation keeps what a Gaussian draws, dead Gaussians
move onto live ones, 5% more are added up to the cap, the noise moves faint Gaussians within their
covariance, and a run trains with it."""
from __future__ import annotations

import math

import pytest
import torch

from fieldkit.splats.densify import DensifyConfig, make_densifier
from fieldkit.splats.mcmc import MAX_COPIES, McmcDensifier, relocation
from tests.splats.test_densify import check_consistent, fill_state, make_optimizer, make_params


@pytest.mark.parametrize("opacity", [0.02, 0.3, 0.8, 0.99, 1 - 1e-6])
@pytest.mark.parametrize("copies", [1, 2, 3, 7, 20, MAX_COPIES])
def test_relocated_copies_draw_what_the_gaussian_drew(opacity, copies):
    """N copies with the new opacity and scale: the same peak opacity, and the same integral
    of opacity along a line through the centre, as the one Gaussian."""
    o, s = relocation(torch.tensor([opacity], dtype=torch.float64),
                      torch.tensor([[0.3, 0.1, 2.0]], dtype=torch.float64),
                      torch.tensor([copies]))
    assert 1 - (1 - float(o)) ** copies == pytest.approx(opacity, rel=1e-9)
    ratio = s[0] / torch.tensor([0.3, 0.1, 2.0], dtype=torch.float64)
    assert torch.allclose(ratio, ratio[0].expand(3))            # every axis alike
    x = torch.linspace(-12, 12, 200001, dtype=torch.float64)   # units of the original's scale
    g = torch.exp(-0.5 * (x / float(ratio[0])) ** 2)
    together = 1 - (1 - float(o) * g) ** copies
    integral = float(torch.trapezoid(together, x))
    assert integral == pytest.approx(opacity * math.sqrt(2 * math.pi), rel=1e-6)
    if copies == 1:
        assert float(o) == pytest.approx(opacity) and float(ratio[0]) == pytest.approx(1.0)


def test_relocation_in_float32_is_finite_for_any_opacity():
    o = torch.tensor([1e-4, 0.5, 1 - torch.finfo(torch.float32).eps])
    new_o, new_s = relocation(o, torch.ones(3, 3), torch.tensor([MAX_COPIES] * 3))
    assert new_o.dtype == torch.float32 and torch.isfinite(new_s).all() and (new_s > 0).all()
    assert (new_o > 0).all() and (new_o < o).all()


def _mcmc(**kw) -> DensifyConfig:
    return DensifyConfig(strategy="mcmc", refine_start=0, refine_every=1, **kw)


def test_dead_gaussians_move_onto_live_ones():
    torch.manual_seed(0)
    params = make_params(100)
    with torch.no_grad():
        params["opacities"][:30] = -8.0                          # dead: sigmoid < 0.005
    opt = make_optimizer(params)
    fill_state(params, opt)
    o0 = torch.sigmoid(params["opacities"].detach()).clone()
    d = make_densifier(_mcmc(mcmc_growth=0.0), scene_extent=1.0)
    assert isinstance(d, McmcDensifier)
    assert d.step(5, params, opt) == {"relocated": 30, "added": 0, "reset": False, "n": 100}
    check_consistent(params, opt)
    o = torch.sigmoid(params["opacities"].detach())
    assert (o > 0.005).all()
    tags = params["sh0"].detach()[:, 0, 0].round().long()      # each row's source Gaussian
    assert (tags[:30] >= 30).all()                              # the dead are copies of live
    # every Gaussian now sharing a place has the opacity of its share, and Adam starts over
    for t in torch.unique(tags[:30]).tolist():
        rows = torch.nonzero(tags == t)[:, 0]
        assert len(rows) >= 2 and t in rows.tolist()
        share = 1 - (1 - o0[t]) ** (1 / len(rows))
        assert torch.allclose(o[rows], share.expand(len(rows)), atol=1e-6)
        assert torch.allclose(params["means"].detach()[rows], params["means"].detach()[t])
        assert (opt.state[params["means"]]["exp_avg"][rows] == 0).all()
    untouched = [i for i in range(30, 100) if (tags == i).sum() == 1]
    assert untouched and (opt.state[params["means"]]["exp_avg"][untouched] != 0).all()
    assert torch.allclose(o[untouched], o0[untouched])


def test_growth_stops_at_the_cap_and_outside_the_refine_steps():
    params = make_params(100)
    opt = make_optimizer(params)
    d = McmcDensifier(_mcmc(refine_stop=10), 1.0)
    assert d.step(2, params, opt)["added"] == 5                 # 5% more
    check_consistent(params, opt)
    tags = params["sh0"].detach()[:, 0, 0].round().long()
    assert sorted(tags[:100].tolist()) == list(range(100))     # appended after the others
    d.config.max_gaussians = 108
    assert d.step(3, params, opt)["n"] == 108                   # 5% would make 110
    assert d.step(4, params, opt)["added"] == 0                 # at the cap
    small = make_params(100)
    late = McmcDensifier(_mcmc(refine_stop=10), 1.0)
    assert late.step(10, small, make_optimizer(small))["n"] == 100


def test_noise_moves_faint_gaussians_within_their_covariance():
    """Flat Gaussians (no extent along z): faint ones move in their plane only, opaque ones
    stay put; the loss adds the opacity and scale means."""
    torch.manual_seed(0)
    params = make_params(200, scale=0.1)
    with torch.no_grad():
        params["quats"].copy_(torch.tensor([1.0, 0, 0, 0]).expand(200, 4))
        params["scales"][:, 2] = -30.0                          # flat along z
        params["opacities"][:100] = 6.0                         # opaque: 0.9975
        params["opacities"][100:] = -6.0                        # faint: 0.0025
    before = params["means"].detach().clone()
    d = McmcDensifier(_mcmc(), 1.0)
    d.after_step(params, means_lr=1e-4)
    moved = params["means"].detach() - before
    assert moved[:100].abs().max() < 1e-6
    assert moved[100:, :2].abs().mean() > 1e-2                 # 5e5 x 1e-4 x 0.01 ~ 0.5
    assert moved[:, 2].abs().max() < 1e-9
    expect = 0.01 * torch.sigmoid(params["opacities"]).mean() + \
        0.01 * params["scales"].exp().mean()
    assert torch.allclose(d.loss(params), expect)


def test_a_bad_strategy_is_refused():
    with pytest.raises(ValueError, match="default, mcmc"):
        DensifyConfig(strategy="mcmc2")


MCMC_DEMO_FLOOR = 20.5
"""The demo at 1/2 size after 200 steps with --splat.densify.strategy mcmc, 16 test views:
22.52 dB measured (2026-12-06; the default strategy 15.87 dB at 200 steps, its opacity reset
still to be recovered from; 400 steps: 29.46 against 28.86)."""


def test_a_run_trains_with_the_mcmc_strategy_up_to_its_cap(tmp_path):
    import json

    from fieldkit.cli import main
    from fieldkit.train.run import load_model
    from tests.conftest import DEMO_SCENE

    run = tmp_path / "mcmc"
    assert main(["train", str(DEMO_SCENE), "--model", "splat", "--out", str(run),
                 "--max-steps", "200", "--downscale", "2", "--max-gaussians", "21000",
                 "--splat.densify.strategy", "mcmc", "--no-video"]) == 0
    model = load_model(run)
    assert model.config.densify.strategy == "mcmc" and model.num_gaussians == 21000
    psnr = json.loads((run / "metrics.json").read_text())["psnr"]
    print(f"mcmc demo, 200 steps: {psnr:.2f} dB")
    assert psnr > MCMC_DEMO_FLOOR


def test_an_mcmc_run_resumes_exactly(tmp_path):
    """Relocation and noise draw from the seeded generator, which the checkpoint keeps."""
    from safetensors.torch import load_file

    from fieldkit.fields.registry import merge, preset_config
    from fieldkit.train.config import TrainConfig
    from fieldkit.train.run import prepare, train
    from tests.conftest import DEMO_SCENE

    cfg = merge(preset_config("splat"), {"init_points": 2000, "densify": {"strategy": "mcmc"}})

    def config() -> TrainConfig:
        return TrainConfig(max_steps=120, eval_every=0, checkpoint_every=1e9, log_every=5)

    straight = train(DEMO_SCENE, "splat", tmp_path / "a", config(), downscale=4,
                     model_config=cfg)
    first = prepare(DEMO_SCENE, "splat", tmp_path / "b", config(), downscale=4, model_config=cfg)
    n0 = first.model.num_gaussians
    for _ in range(30):     # refinements at about steps 2 and 52 (MIN_REFINE_GAP)
        first.step()
    assert first.model.num_gaussians > n0      # grown before the interruption
    first.save()
    resumed = train(DEMO_SCENE, "splat", tmp_path / "b", config(), downscale=4, resume=True)
    a = load_file(straight.run_dir / "model.safetensors")
    b = load_file(resumed.run_dir / "model.safetensors")
    assert len(a["params.means"]) > first.model.num_gaussians    # and after it
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
