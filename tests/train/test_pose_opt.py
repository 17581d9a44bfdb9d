"""--pose-opt: camera pose refinement recovers known pose errors, for fields and splats."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from fieldkit.cli import main
from fieldkit.data.scene import composite, load_scene
from fieldkit.encoders.hashgrid import HashGrid, HashGridConfig
from fieldkit.train.config import TrainConfig
from fieldkit.train.metrics import psnr
from fieldkit.train.pose_opt import (PoseCorrections, PoseRefiner, pose_errors, so3_exp,
                                     turn_poses)
from fieldkit.train.run import prepare, scene_for_model, scene_trainer, train
from tests.conftest import DEMO_SCENE


def test_so3_exp_is_a_rotation_with_a_gradient_at_zero():
    w = torch.randn(64, 3, dtype=torch.float64) * 0.7
    skew = torch.zeros(64, 3, 3, dtype=torch.float64)
    skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -w[:, 2], w[:, 1], -w[:, 0]
    skew = skew - skew.transpose(1, 2)
    assert torch.allclose(so3_exp(w), torch.linalg.matrix_exp(skew), atol=1e-12)
    zero = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.equal(so3_exp(zero), torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    so3_exp(zero)[:, 0, 1].sum().backward()     # d R01 / d w_z = -1 at zero
    assert torch.allclose(zero.grad, torch.tensor([[0.0, 0, -1]] * 2, dtype=torch.float64))


def test_corrected_rays_are_the_rays_of_the_corrected_cameras():
    cams = load_scene(DEMO_SCENE, downscale=4).cameras
    poses = PoseCorrections(cams.c2w)
    idx = torch.randint(0, len(cams), (400,))
    xy = torch.rand(400, 2) * 24
    o, d = cams.rays(idx, xy)
    o0, d0 = poses.adjust_rays(o, d, idx)      # zero corrections: the rays as they were
    assert torch.equal(o0, o) and torch.allclose(d0, d, atol=1e-7)
    with torch.no_grad():
        poses.delta.normal_(0, 0.05)
    o1, d1 = poses.adjust_rays(o, d, idx)
    moved = replace(cams, c2w=poses.refined())
    o2, d2 = moved.rays(idx, xy)
    assert torch.allclose(o1, o2, atol=1e-6) and torch.allclose(d1, d2, atol=1e-6)
    assert (o1 - o).norm(dim=-1).mean() > 0.01     # the corrections did move them


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hash_grid_differentiates_positions_when_asked(dtype):
    """The fused hash grid's position gradient (``_position_grad_eager``) against its
    plain-autograd twin (dense and hashed levels) and, in float64, central differences."""
    config = HashGridConfig(num_levels=6, log2_table_size=10, base_resolution=4,
                            max_resolution=64)
    fused, twin = HashGrid(config).to(dtype), HashGrid(config, impl="torch").to(dtype)
    assert 0 < fused.num_dense_levels < 6
    with torch.no_grad():
        fused.table.normal_(0, 1)
        twin.table.copy_(fused.table)
    x = torch.rand(3000, 3, dtype=dtype) * 1.1 - 0.05      # a few outside [0, 1]: clamped
    w = torch.randn(3000, fused.out_dim, dtype=dtype)
    grads = []
    for grid in (fused, twin):
        xg = x.clone().requires_grad_(True)
        out = grid(xg)
        grads.append((out, *torch.autograd.grad((out * w).sum(), (xg, grid.table))))
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    for a, b in zip(grads[0], grads[1]):
        assert torch.allclose(a, b, rtol=tol, atol=tol)
    assert grads[0][1].abs().mean() > 1.0
    assert torch.count_nonzero(grads[0][1][(x < 0) | (x > 1)]) == 0   # clamped coordinates
    if dtype == torch.float64:
        eps = 1e-7   # well inside the cells of every level
        step = torch.tensor([0, eps, 0], dtype=dtype)
        with torch.no_grad():
            fd = ((fused(x + step) - fused(x - step)) * w).sum(1) / (2 * eps)
        inside = ((x > 0) & (x < 1)).all(1)
        assert torch.allclose(grads[0][1][inside, 1], fd[inside], rtol=1e-4, atol=1e-4)


def test_refiner_moves_only_the_cameras_a_step_saw():
    cams = load_scene(DEMO_SCENE, downscale=4).cameras
    refiner = PoseRefiner(cams, torch.arange(len(cams)), lr=1e-2, weight_decay=0.0)
    refiner.corrections.delta.grad = torch.zeros(len(cams), 6)
    refiner.corrections.delta.grad[3] = torch.tensor([1.0, -2, 3, 0, 0, -1])
    refiner.step()
    delta = refiner.corrections.delta.detach()
    # Adam's first step is one learning rate against the gradient's sign, on row 3 only.
    assert torch.allclose(delta[3], -1e-2 * torch.tensor([1.0, -1, 1, 0, 0, -1]))
    assert torch.count_nonzero(delta[torch.arange(len(cams)) != 3]) == 0
    refiner.zero_grad()
    refiner.step()     # no gradient: nothing moves (no momentum carries the row on)
    assert torch.equal(refiner.corrections.delta.detach(), delta)


def test_refiner_waits_for_its_start():
    """Before ``start`` (a fraction of the budget) the corrections neither move nor adjust
    anything; from there on they learn."""
    cams = load_scene(DEMO_SCENE, downscale=4).cameras
    refiner = PoseRefiner(cams, torch.arange(len(cams)), lr=1e-2, weight_decay=0.0, start=0.5)
    assert not refiner.learning
    for progress, moves in ((0.0, False), (0.49, False), (0.5, True)):
        refiner.set_lr_factor(1.0, progress)
        assert refiner.learning == moves
        refiner.corrections.delta.grad = torch.ones(len(cams), 6)
        refiner.step()
        assert bool(refiner.corrections.delta.detach().abs().sum() > 0) == moves


def _turned_run(kind: str, steps: int, tmp_path, pose_opt: bool = True):
    """The demo scene with its training poses turned ~2 degrees and moved 0.05 box units."""
    scene = scene_for_model(load_scene(DEMO_SCENE, downscale=2), kind)
    truth = scene.cameras.c2w.clone()
    views = scene.split("train")
    scene.cameras.c2w = turn_poses(truth, views, 2.0, 0.05)
    config = TrainConfig(max_steps=steps, eval_every=0, checkpoint_every=1e9,
                         background="random", pose_opt=pose_opt)
    trainer = scene_trainer(scene, kind, config, tmp_path / kind)
    trainer.train()
    white = torch.ones(3)
    score = sum(psnr(trainer.render(scene.cameras[int(i)], "white")["rgb"],
                     composite(scene.image(int(i)), white))
                for i in scene.split("test")) / len(scene.split("test"))
    before = pose_errors(scene.cameras.c2w[views], truth[views])[0].mean()
    after = pose_errors(trainer.poses.train_cameras().c2w, truth[views])[0].mean() \
        if pose_opt else before
    return score, float(before), float(after), trainer


@pytest.mark.parametrize("kind,steps,floor,ratio", [("triplane", 400, 20.0, 0.8),
                                                    ("splat", 600, 24.2, 0.9)])
def test_pose_opt_recovers_turned_poses(kind, steps, floor, ratio, tmp_path):
    """Without --pose-opt these runs reach 18.96 dB (tri-plane) and 21.95 dB (splat) on the
    true held-out views; refined, 21.07 (tri-plane, refining from a quarter of its steps;
    21.96 from the first) and 25.12 (measured 2026-12-07; longer runs in
    apps/results/pose_opt_cpu). They clear the floors, and the training cameras' rotation
    error falls (measured: to 0.72x and 0.82x)."""
    score, before, after, trainer = _turned_run(kind, steps, tmp_path)
    assert score > floor, (score, before, after)
    print(f"{kind}: {score:.2f} dB, rotation error {before:.3f} -> {after:.3f} deg")
    assert after < ratio * before, (before, after)
    report = json.loads((trainer.run_dir / "poses.json").read_text())
    assert len(report["cameras"]) == len(trainer.scene.split("train"))
    assert report["mean_rotation_deg"] > 0.3
    saved = load_file(trainer.run_dir / "cameras.safetensors")   # what distill and view use
    assert torch.allclose(saved["c2w"].float(), trainer.poses.train_cameras().c2w.float())


def test_pose_opt_resumes_identically(tmp_path):
    config = TrainConfig(max_steps=40, eval_every=0, checkpoint_every=1e9, log_every=5,
                         pose_opt=True)
    straight = train(DEMO_SCENE, "triplane", tmp_path / "a", config, downscale=4)
    first = prepare(DEMO_SCENE, "triplane", tmp_path / "b", config, downscale=4)
    for _ in range(20):
        first.step()
    first.save()
    resumed = train(DEMO_SCENE, "triplane", tmp_path / "b", config, downscale=4, resume=True)
    assert resumed.steps == 40
    a = json.loads((straight.run_dir / "poses.json").read_text())
    b = json.loads((resumed.run_dir / "poses.json").read_text())
    assert a["mean_rotation_deg"] > 0 and a == b
    ma, mb = (load_file(r.run_dir / "model.safetensors") for r in (straight, resumed))
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_cli_reports_the_corrections(tmp_path, capsys):

    code = main(["train", str(DEMO_SCENE), "--model", "triplane", "--out", str(tmp_path / "r"),
                 "--max-steps", "20", "--downscale", "4", "--pose-opt", "--no-final-eval",
                 "--no-video"])
    assert code in (0, None)
    out = capsys.readouterr().out
    assert "poses      poses.json: training cameras moved by" in out
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["train"]
    assert saved["pose_opt"] is True
    # The viewer draws the training cameras where training moved them.
    pytest.importorskip("viser")
    from fieldkit.viewer.sources import Source

    refined = load_file(tmp_path / "r" / "cameras.safetensors")["c2w"]
    given = load_scene(DEMO_SCENE, downscale=4)
    given = given.cameras.c2w[given.split("train")]
    drawn = Source.from_run(tmp_path / "r").cameras.c2w
    assert torch.allclose(drawn.float(), refined.float()) and not torch.equal(drawn, given)


def test_pose_start_is_the_models_unless_given_and_a_fraction(tmp_path, capsys):
    """Tri-planes wait for a quarter of the budget, hash grids and splats start at once; a
    start outside [0, 1) is a one-line error."""
    for kind, given, start in (("triplane", None, 0.25), ("hashgrid", None, 0.0),
                               ("splat", None, 0.0), ("triplane", 0.0, 0.0),
                               ("splat", 0.5, 0.5)):
        config = TrainConfig(max_steps=1, pose_opt=True, pose_start=given)
        trainer = prepare(DEMO_SCENE, kind, tmp_path / f"{kind}{given}", config, downscale=4)
        assert trainer.poses.start == start, kind
        assert trainer.poses.learning == (start == 0.0)
    assert main(["train", str(DEMO_SCENE), "--model", "triplane", "--pose-opt", "--pose-start",
                 "1.5", "--max-steps", "1", "--downscale", "4", "--out",
                 str(tmp_path / "bad")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--pose-start is a fraction of the budget" in err
