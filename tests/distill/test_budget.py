"""A distillation's target renders fit its time budget: fewer teacher views or bank rays when the
teacher renders slowly (never fewer than a minimum), the cut reported, and a resumed run
renders the same targets."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from fieldkit.data.cameras import Cameras
from fieldkit.data.normalize import Normalisation
from fieldkit.distill import targets
from fieldkit.distill.budget import RenderBudget
from fieldkit.distill.config import DistillConfig
from fieldkit.distill.run import distill
from fieldkit.distill.teacher import Teacher
from fieldkit.errors import FieldkitWarning
from fieldkit.train.config import TrainConfig


def test_count_fits_the_time_left_between_the_minimum_and_what_was_asked():
    assert RenderBudget(None).count("v", "views", 100, 16, 5.0) == 100
    b = RenderBudget(30.0)
    assert b.count("v", "views", 100, 16, 0.1) == 100 and not b.cuts    # all fit
    b.add(10.0)
    assert b.count("v", "views", 100, 4, 1.0) == 20                    # 20 s left
    assert b.count("w", "views", 100, 40, 1.0) == 40                   # the minimum
    assert b.count("x", "views", 10, 40, 1.0) == 10                    # never more than asked
    assert [c["made"] for c in b.cuts] == [20, 40]
    assert b.made == {"v": 20, "w": 40, "x": 10}
    assert "20 of 100 views" in b.summary() and "--max-time" in b.summary()
    assert RenderBudget(0.0, fixed={"v": 7}).count("v", "views", 100, 16, 9.0) == 7
    assert RenderBudget(30.0).summary() is None


class FakeTeacher:
    """Renders views (depth = the camera's x position) and rays (rgb = the ray's direction)."""

    is_splat = False
    model = torch.nn.Module()   # a teacher without hash grids: nothing to compile

    def __init__(self):
        self.views = self.rays = 0

    def render_view(self, camera: Cameras) -> dict[str, torch.Tensor]:
        self.views += 1
        h, w = int(camera.height[0]), int(camera.width[0])
        return {"rgb": torch.full((h, w, 3), 0.5), "alpha": torch.ones(h, w, 1),
                "depth": torch.full((h, w, 1), float(camera.c2w[0, 0, 3]))}

    def render_rays(self, origins, dirs) -> dict[str, torch.Tensor]:
        self.rays += len(origins)
        return {"rgb": dirs.clone(), "depth": origins[:, :1].clone(),
                "alpha": torch.ones(len(origins), 1)}


def _cameras(n: int, first: int = 0, size: int = 8) -> Cameras:
    c2w = torch.eye(4).repeat(n, 1, 1)
    c2w[:, 0, 3] = torch.arange(first, first + n, dtype=torch.float32)
    K = torch.tensor([[8.0, 0, size / 2], [0, 8.0, size / 2], [0, 0, 1]]).repeat(n, 1, 1)
    return Cameras(c2w, K, torch.full((n,), size), torch.full((n,), size))


def test_render_scene_keeps_as_many_novel_views_as_fit_and_every_held_out_one(tmp_path):
    norm = Normalisation(1.0, np.eye(3), np.zeros(3))
    for budget, expected in ((None, 40), (RenderBudget(1e6), 40),
                             (RenderBudget(0.0), targets.MIN_TRAIN_VIEWS)):
        teacher = FakeTeacher()
        views = targets.render_scene(teacher, _cameras(40), _cameras(5, first=100), norm,
                                     tmp_path, budget)
        assert views.num_train == expected and teacher.views == expected + 5
        assert views.scene.split("train").tolist() == list(range(expected))
        assert views.scene.split("test").tolist() == list(range(expected, expected + 5))
        # each view's depth is its own camera's, the held-out ones after the novel ones
        assert [float(d[0, 0, 0]) for d in views.depth] == (
            list(range(expected)) + list(range(100, 105)))
        assert len(views.frame_seconds) == expected + 5
        if budget is not None:
            assert budget.made == {"views": expected}
            assert budget.spent == pytest.approx(sum(views.frame_seconds[:expected]))


class SlowerTeacher(FakeTeacher):
    """Renders the held-out views (x >= 100) fast and the others 20 ms each."""

    def render_view(self, camera: Cameras) -> dict[str, torch.Tensor]:
        time.sleep(0.0 if float(camera.c2w[0, 0, 3]) >= 100 else 0.02)
        return super().render_view(camera)


def test_views_slower_than_the_estimate_stop_when_the_time_is_spent(tmp_path):
    norm = Normalisation(1.0, np.eye(3), np.zeros(3))
    budget = RenderBudget(0.5)
    teacher = SlowerTeacher()
    views = targets.render_scene(teacher, _cameras(60), _cameras(5, first=100), norm,
                                 tmp_path, budget)
    # the held-out renders promised all 60 in the time; at 20 ms each ~25 fit
    assert targets.MIN_TRAIN_VIEWS <= views.num_train < 40
    assert budget.made == {"views": views.num_train} and teacher.views == views.num_train + 5
    assert 0.5 <= budget.spent < 0.5 + 0.1
    (cut,) = budget.cuts
    assert cut["asked"] == 60 and cut["made"] == views.num_train
    assert cut["seconds_each"] == pytest.approx(0.02, rel=0.5)
    assert f"{views.num_train} of 60 teacher views" in budget.summary()
    # a resumed run renders the saved count, however slow
    again = RenderBudget(0.0, fixed=dict(budget.made))
    assert targets.render_scene(SlowerTeacher(), _cameras(60), _cameras(5, first=100), norm,
                                tmp_path, again).num_train == views.num_train


def test_the_teacher_compiles_when_the_renders_ahead_pay_for_it(tmp_path, monkeypatch):
    norm = Normalisation(1.0, np.eye(3), np.zeros(3))
    asked = []

    def compile_if_it_pays(model, seconds_ahead):
        asked.append(seconds_ahead)
        time.sleep(0.05)            # the compilation
        return True

    monkeypatch.setattr(targets, "compile_if_it_pays", compile_if_it_pays)
    budget = RenderBudget(1e6)
    views = targets.render_scene(SlowerTeacher(), _cameras(10), _cameras(5, first=100), norm,
                                 tmp_path, budget)
    # timed by the first held-out view: 4 more of them and the 10 target views ahead
    assert asked == [pytest.approx(views.frame_seconds[10] * 14)]
    # the compilation counts as rendering time of the budget
    assert budget.spent == pytest.approx(sum(views.frame_seconds[:10]) + 0.05, abs=0.02)
    # no held-out views: timed by the first target view, the 9 others ahead
    asked.clear()
    budget = RenderBudget(1e6)
    views = targets.render_scene(SlowerTeacher(), _cameras(10), _cameras(0), norm, tmp_path,
                                 budget)
    assert views.num_train == 10 and asked == [pytest.approx(views.frame_seconds[0] * 9)]
    assert budget.spent == pytest.approx(sum(views.frame_seconds) + 0.05, abs=0.02)


def test_a_ray_bank_cut_short_keeps_its_first_rays_with_their_targets():
    cams = _cameras(30, size=64)
    n = 5 * targets.BANK_CHUNK
    full = targets.build_ray_bank(FakeTeacher(), cams, n, torch.Generator().manual_seed(0))
    teacher, budget = FakeTeacher(), RenderBudget(0.0)
    cut = targets.build_ray_bank(teacher, cams, n, torch.Generator().manual_seed(0), budget)
    assert len(full) == n and len(cut) == teacher.rays == targets.MIN_BANK_RAYS
    assert budget.made == {"bank_chunks": targets.MIN_BANK_RAYS // targets.BANK_CHUNK}
    torch.testing.assert_close(cut.origins, full.origins[:len(cut)])
    torch.testing.assert_close(cut.rgb, cut.dirs)                  # each ray keeps its render
    torch.testing.assert_close(cut.depth[:, 0], cut.origins[:, 0])


def test_a_slow_teacher_gets_fewer_views_and_a_resume_renders_the_same(demo_run, tmp_path,
                                                                      monkeypatch):
    """Each render made slow (0.05 s): 1 s of budget leaves 0.5 s for the views, so the
    splat student gets the minimum of 16 teacher views, not the 40 asked, and says so."""
    render = Teacher.render_view

    def slow(self, camera):
        time.sleep(0.05)
        return render(self, camera)

    monkeypatch.setattr(Teacher, "render_view", slow)
    config = DistillConfig(views=40, held_out_views=4, gt_views=0)
    out = tmp_path / "h2s"
    train = TrainConfig(max_time=1.0, eval_every=0, checkpoint_every=1e9)
    with pytest.warns(FieldkitWarning, match="16 of 40 teacher views"):
        report = distill(demo_run, "splat", out, train, config, quiet=True)
    assert report["targets"]["rendered"] == {"views": targets.MIN_TRAIN_VIEWS}
    assert report["targets"]["cut"][0]["asked"] == 40
    saved = json.loads((out / "config.json").read_text())["distill"]["rendered"]
    assert saved == {"views": targets.MIN_TRAIN_VIEWS}
    # resumed for a few more steps (the first run's time limit no longer applies) with a
    # fast teacher: the same 16 views, no new cut
    monkeypatch.undo()
    steps = report["student"]["steps"]
    again = distill(demo_run, "splat", out, TrainConfig(max_steps=steps + 5), config,
                    resume=True, quiet=True)
    assert again["targets"]["rendered"] == {"views": targets.MIN_TRAIN_VIEWS}
    assert not again["targets"]["cut"] and again["student"]["steps"] == steps + 5


def test_ctrl_c_while_the_targets_render_stops_at_the_next_view(tmp_path):
    """Distillation's set-up runs under stop_on_ctrl_c: the first Ctrl-C ends the renders at
    the next view (a KeyboardInterrupt from a safe point), not after all of them."""
    import signal

    from fieldkit.train.interrupt import stop_on_ctrl_c

    class CtrlCAtThree(FakeTeacher):
        def render_view(self, camera):
            if self.views == 3:
                signal.raise_signal(signal.SIGINT)
            return super().render_view(camera)

    norm = Normalisation(1.0, np.eye(3), np.zeros(3))
    teacher = CtrlCAtThree()
    with stop_on_ctrl_c(), pytest.raises(KeyboardInterrupt):
        targets.render_scene(teacher, _cameras(40), _cameras(5, first=100), norm, tmp_path)
    assert teacher.views == 4
