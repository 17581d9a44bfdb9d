"""Distillation on the demo scene: every conversion reaches a student-vs-teacher PSNR floor with a
short step budget, distill.json holds real numbers, and the teacher alone suffices."""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fieldkit.cli import main
from fieldkit.distill.config import DistillConfig, student_config
from fieldkit.distill.run import distill
from fieldkit.errors import FieldkitWarning
from fieldkit.fields.registry import preset_config
from fieldkit.train.config import TrainConfig
from fieldkit.train.run import load_run_scene

# Small targets keep each conversion to ~10-25 s on two cores.
FAST = DistillConfig(views=40, bank_views=60, bank_rays=1 << 16, held_out_views=4, gt_views=6)


def _train(steps: int) -> TrainConfig:
    return TrainConfig(max_steps=steps, eval_every=0, checkpoint_every=1e9, warmup_steps=10)


def _check_report(report: dict, run: Path, teacher_kind: str, kind: str) -> None:
    on_disk = json.loads((run / "distill.json").read_text())
    assert on_disk["vs_teacher"]["psnr"] == pytest.approx(report["vs_teacher"]["psnr"])
    assert on_disk["teacher"]["kind"] == teacher_kind and on_disk["student"]["kind"] == kind
    for side in ("teacher", "student"):
        assert on_disk[side]["num_params"] > 0 and on_disk[side]["bytes_on_disk"] > 1000
    gt = on_disk["vs_photos"]
    assert gt["views"] == 6 and gt["photos"] == "as shot"   # the demo has no lens distortion
    for side in ("teacher", "student"):
        assert 10 < gt[side]["psnr"] < 60 and gt[side]["seconds_per_frame"] > 0
    t = on_disk["time"]
    assert t["student_seconds"] > 0 and t["teacher_seconds"] > 0
    assert t["total_seconds"] >= t["distill_seconds"]
    # the held-out views' renders serve the report only: outside the distillation's time
    assert t["held_out_seconds"] > 0
    assert t["distill_seconds"] == pytest.approx(t["teacher_seconds"] + t["student_seconds"])
    assert t["total_seconds"] >= t["distill_seconds"] + t["held_out_seconds"]
    assert all(math.isfinite(v) for v in (gt["student_vs_teacher_psnr"], t["total_seconds"]))


def _from_demo(demo_run, tmp_path_factory, kind: str) -> tuple[Path, dict]:
    """(run, report) of the demo hash grid distilled into ``kind`` for 300 steps."""
    out = tmp_path_factory.mktemp("distill") / f"hashgrid-to-{kind}"
    return out, distill(demo_run, kind, out, _train(300), FAST, quiet=True)


@pytest.fixture(scope="module")
def hash_to_triplane(demo_run, tmp_path_factory):
    return _from_demo(demo_run, tmp_path_factory, "triplane")


def test_hash_to_triplane(hash_to_triplane):
    out, report = hash_to_triplane
    _check_report(report, out, "hashgrid", "triplane")
    assert report["vs_teacher"]["psnr"] > 26.0
    # a default tri-plane student is built with STUDENT_DEFAULTS (8 channels a plane)
    saved = json.loads((out / "config.json").read_text())["model"]["config"]
    assert saved["encoder"]["features"] == 8
    # a field student's stage-1 steps have as many points as its model's samples a step (2^14)
    assert set(_batches(out)[1]) == {1 << 14}
    # The student is a run like any other: its model loads and `fieldkit eval` reads it.
    assert main(["eval", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["psnr"] > 22.0


def _log(run: Path) -> list[dict]:
    """The logged steps of ``run``."""
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x]


def _batches(run: Path) -> dict[int, list[int]]:
    """Samples of each logged step of ``run``, by stage."""
    out: dict[int, list[int]] = {1: [], 2: []}
    for line in _log(run):
        out[int(line["stage"])].append(int(line["samples"]))
    return out


@pytest.fixture(scope="module")
def hash_to_mlp(demo_run, tmp_path_factory):
    return _from_demo(demo_run, tmp_path_factory, "mlp")


def test_hash_to_mlp(hash_to_mlp):
    out, report = hash_to_mlp
    _check_report(report, out, "hashgrid", "mlp")
    print(f"hash grid -> MLP: {report['vs_teacher']['psnr']:.2f} dB vs the teacher")
    assert report["vs_teacher"]["psnr"] > 25.0  # measured 27.7 (300 steps of 2^12 samples)
    # An MLP student's steps are its model's 2^12 samples: 2^12 points in stage 1, rays
    # adapted to ~2^12 samples in stage 2.
    batches = _batches(out)
    assert set(batches[1]) == {1 << 12}
    assert 0.5 * (1 << 12) < sorted(batches[2])[len(batches[2]) // 2] < 2 * (1 << 12)
    # its stage 1 takes 60% of the budget (VOLUME_FRACTION), saved with the run
    saved = json.loads((out / "config.json").read_text())["distill"]["config"]
    assert saved["volume_fraction"] == 0.6
    # and its stage-1 points come from a bank of 2^20 the teacher answered once (POINT_BANK)
    assert saved["point_bank"] == 1 << 20
    steps = {s: [x["step"] for x in _log(out) if x["stage"] == s] for s in (1, 2)}
    assert 160 <= max(steps[1]) <= 181 <= min(steps[2]) <= 200, (max(steps[1]), min(steps[2]))


def test_stage_one_share_by_student_kind():
    """An MLP student spends 60% of its budget on points, the others 40%; a setting given
    applies to every kind."""
    assert DistillConfig().volume_fraction_for("mlp") == 0.6
    assert DistillConfig().volume_fraction_for("hashgrid") == 0.4
    assert DistillConfig().volume_fraction_for("triplane") == 0.4
    assert DistillConfig(volume_fraction=0.25).volume_fraction_for("mlp") == 0.25


def test_point_bank_by_student_and_teacher():
    """Stage-1 points answered once: 2^19 from splats (also when 0 is asked: their mixture is
    too costly to query every step), 2^20 for an MLP student of a field, fresh for the
    others; a size given applies to every pair."""
    c = DistillConfig()
    assert c.point_bank_for("hashgrid", True) == c.point_bank_for("mlp", True) == 1 << 19
    assert c.point_bank_for("mlp", False) == 1 << 20
    assert c.point_bank_for("triplane", False) == c.point_bank_for("hashgrid", False) == 0
    assert DistillConfig(point_bank=0).point_bank_for("mlp", False) == 0
    assert DistillConfig(point_bank=0).point_bank_for("mlp", True) == 1 << 19
    assert DistillConfig(point_bank=5000).point_bank_for("triplane", False) == 5000


def test_hash_to_splat(demo_run, tmp_path):
    report = distill(demo_run, "splat", tmp_path / "h2s", _train(300), FAST, quiet=True)
    _check_report(report, tmp_path / "h2s", "hashgrid", "splat")
    assert report["vs_teacher"]["psnr"] > 25.0
    # a default splat student is built with STUDENT_DEFAULTS (up to 50k surface points), and
    # starts from at most DistillConfig.splat_points_per_pixel Gaussians a pixel of its views
    saved = json.loads((tmp_path / "h2s" / "config.json").read_text())["model"]["config"]
    assert saved["init_points"] == 50000
    scene = load_run_scene(demo_run)
    pixels = int(scene.cameras.width[0]) * int(scene.cameras.height[0])
    per_pixel = DistillConfig().splat_points_per_pixel
    assert 0.5 * per_pixel * pixels < report["student"]["initial_gaussians"] <= round(
        per_pixel * pixels)


def test_splat_to_hash(demo_splat_run, tmp_path):
    report = distill(demo_splat_run, "hashgrid", tmp_path / "s2h", _train(300), FAST,
                     quiet=True)
    _check_report(report, tmp_path / "s2h", "splat", "hashgrid")
    assert report["vs_teacher"]["psnr"] > 25.0


OTHER_PAIRS = {("triplane", "mlp"): 19.0, ("triplane", "splat"): 24.0, ("mlp", "hashgrid"): 30.0,
               ("mlp", "triplane"): 36.0, ("mlp", "splat"): 24.5, ("splat", "triplane"): 22.0,
               ("splat", "mlp"): 16.5}
"""The pairs the tests above leave out, and their floors (student vs teacher, dB) after
OTHER_STEPS steps (OTHER_STEPS_FOR for some), about 2 dB under the lowest of three training
seeds measured here on 2026-12-05 (22.51/21.71/20.88, 26.99/26.72/26.85, 33.36/32.83/32.59,
39.44/39.15/40.02, 26.97/27.17/27.56, 24.84/24.57/24.87 and 18.68/20.00/20.38; an MLP learns
least in 150 steps). A constant colour a view scores 11.3 dB against the demo's test photos
over white."""
OTHER_STEPS = 150
OTHER_STEPS_FOR = {("mlp", "triplane"): 300}
"""A tri-plane student from the MLP teacher is still in its first rise at 150 steps, where the
seed moved it from 25.9 to 29.0 dB (its floor of 30, set from one earlier run at 33.6, then
failed); at 300 steps three seeds agree within 0.9 dB."""


@pytest.mark.parametrize("pair", list(OTHER_PAIRS), ids="{0[0]}-to-{0[1]}".format)
def test_every_other_pair_converts(pair, hash_to_triplane, hash_to_mlp, demo_splat_run,
                                   tmp_path):
    """Every pair of different kinds works: a short distillation from each teacher kind to
    each other kind clears a floor against its teacher and writes a full report."""
    teacher_kind, kind = pair
    teacher = {"triplane": hash_to_triplane[0], "mlp": hash_to_mlp[0],
               "splat": demo_splat_run}[teacher_kind]
    out = tmp_path / f"{teacher_kind}-to-{kind}"
    steps = OTHER_STEPS_FOR.get(pair, OTHER_STEPS)
    report = distill(teacher, kind, out, _train(steps), FAST, quiet=True)
    _check_report(report, out, teacher_kind, kind)
    print(f"{teacher_kind} -> {kind}: {report['vs_teacher']['psnr']:.2f} dB vs the teacher")
    assert report["student"]["steps"] == steps
    assert report["vs_teacher"]["psnr"] > OTHER_PAIRS[pair]


def test_triplane_to_hash_from_the_teacher_alone(hash_to_triplane, tmp_path):
    """The scene is gone: cameras come from the run, and the report has no photo comparison."""
    src, _ = hash_to_triplane
    teacher = tmp_path / "teacher"
    shutil.copytree(src, teacher)
    cfg = json.loads((teacher / "config.json").read_text())
    cfg["scene"] = str(tmp_path / "gone")
    (teacher / "config.json").write_text(json.dumps(cfg))
    report = distill(teacher, "hashgrid", tmp_path / "t2h", _train(300), FAST, quiet=True)
    assert report["cameras"] == "run" and "vs_photos" not in report
    assert report["vs_teacher"]["psnr"] > 25.0


def test_student_grid_starts_from_the_teachers(demo_run):
    from fieldkit.distill.field import init_grid_from_teacher
    from fieldkit.distill.teacher import Teacher
    from fieldkit.fields.registry import build_model
    from fieldkit.train.run import load_model

    teacher = Teacher(load_model(demo_run))
    student = build_model("mlp", teacher.model.config.render.bound)
    assert bool(student.grid.binary.all())  # a fresh grid skips nothing
    init_grid_from_teacher(student, teacher)
    same = (student.grid.binary == teacher.model.grid.binary).float().mean()
    assert float(same) > 0.99 and not bool(student.grid.binary.all())


def test_the_students_grid_refresh_skips_the_warm_up():
    """Its grid starts from the teacher's: no full refreshes (tests/fields/test_nerf.py checks
    what warmup_steps=0 evaluates), and none at all in stage 1."""
    from fieldkit.distill.field import FieldDistillTrainer

    calls = []

    class Model:
        def update_grid(self, step, warmup_steps=256):
            calls.append((step, warmup_steps))

    trainer = object.__new__(FieldDistillTrainer)
    trainer.model, trainer.step_count = Model(), 32
    trainer.stage = lambda: 2
    trainer.update_grid()
    assert calls == [(32, 0)]
    trainer.stage = lambda: 1   # stage 1 marches no rays: the grid is not refreshed
    trainer.update_grid()
    assert calls == [(32, 0)]


def test_a_field_teachers_point_bank_is_asked_once():
    """distill.point_bank > 0: the teacher answers the bank's points once and every step draws
    from them with their answers; 0: fresh points, the teacher asked every step."""
    from fieldkit.distill.field import FieldDistillTrainer

    class FieldTeacher:
        is_splat, calls = False, 0

        def query(self, pts, dirs):
            FieldTeacher.calls += 1
            return pts * 0.5, pts[:, 0].abs()      # rgb, density: functions of the point

    trainer = object.__new__(FieldDistillTrainer)
    trainer.teacher, trainer.point_bank, trainer.bank_points = FieldTeacher(), None, None
    trainer.model = SimpleNamespace(kind="hashgrid")
    trainer.distill, trainer.config = DistillConfig(point_bank=1000), TrainConfig(max_time=60)
    trainer.generator, trainer.device = torch.Generator().manual_seed(1), torch.device("cpu")
    trainer.draw_points = lambda n, g=None: (torch.rand(n, 3, generator=g),
                                             torch.randn(n, 3, generator=g))
    for _ in range(3):
        pts, dirs, rgb, sigma = trainer.point_targets(64)
        assert torch.equal(rgb, pts * 0.5) and torch.equal(sigma, pts[:, 0].abs())
        assert bool((trainer.point_bank[0][:, None] == pts[None]).all(-1).any(0).all())
    assert FieldTeacher.calls == 1 and len(trainer.point_bank[0]) == 1000
    trainer.distill, trainer.point_bank = DistillConfig(point_bank=0), None
    trainer.point_targets(64)
    trainer.point_targets(64)
    assert FieldTeacher.calls == 3 and trainer.point_bank is None


def test_a_slow_splat_teachers_point_bank_fits_the_time_budget(monkeypatch):
    """A 3DGS file of millions of Gaussians answers a few thousand points a second: the bank's
    first points are timed and only as many answered as fit POINT_BANK_SHARE of the student's
    time (never fewer than POINT_BANK_MIN), with a warning; without a time budget, all."""
    from fieldkit.distill import field

    monkeypatch.setattr(field, "POINT_BANK_CHUNK", 1000)
    monkeypatch.setattr(field, "POINT_BANK_MIN", 1500)

    class SlowSplats:
        is_splat, asked = True, 0

        def cells(self):
            return None

        def query(self, pts, dirs):
            SlowSplats.asked += len(pts)
            time.sleep(len(pts) * 1e-4)                 # 10k points a second
            return pts * 0.5, pts[:, 0].abs()

    def trainer_with(config):
        trainer = object.__new__(field.FieldDistillTrainer)
        trainer.teacher, trainer.point_bank, trainer.config = SlowSplats(), None, config
        trainer.bank_points, trainer.model = None, SimpleNamespace(kind="hashgrid")
        trainer.distill = DistillConfig(point_bank=20000)
        trainer.generator, trainer.device = torch.Generator().manual_seed(1), torch.device("cpu")
        trainer.draw_points = lambda n, g=None: (torch.rand(n, 3, generator=g),
                                                 torch.randn(n, 3, generator=g))
        return trainer

    trainer = trainer_with(TrainConfig(max_time=3.0))    # 0.3 s for the bank: ~3000 points
    with pytest.warns(FieldkitWarning, match="point bank was cut to"):
        pts, _, rgb, sigma = trainer.point_targets(64)
    kept = len(trainer.point_bank[0])
    assert 1500 <= kept < 6000 and SlowSplats.asked == kept
    assert torch.equal(rgb, pts * 0.5) and torch.equal(sigma, pts[:, 0].abs())
    assert all(len(t) == kept for t in trainer.point_bank)
    trainer = trainer_with(TrainConfig(max_time=0.05))   # the minimum
    with pytest.warns(FieldkitWarning):
        trainer.point_targets(64)
    assert len(trainer.point_bank[0]) == 1500
    SlowSplats.asked = 0
    trainer = trainer_with(TrainConfig(max_steps=10))    # no time budget: every point
    trainer.point_targets(64)
    assert len(trainer.point_bank[0]) == 20000 == SlowSplats.asked
    # a resume answers the bank the run had, whatever the time budget says now
    extra = {"distill_stage": 1, "point_bank_points": 1700}
    for now in (TrainConfig(max_time=0.05), TrainConfig(max_time=1e6)):
        resumed = trainer_with(now)
        resumed.restore_state({}, extra)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            resumed.point_targets(64)
        assert len(resumed.point_bank[0]) == 1700


def test_resume_continues_an_interrupted_distillation_with_its_crop(demo_run, tmp_path):
    """A distillation of the teacher's x >= 0 half (``--crop``), resumed without the flag:
    it continues, keeps the crop, and the student has nothing where the crop left nothing."""
    from fieldkit.render.crop import CropBox
    from fieldkit.train.run import load_model

    out, crop = tmp_path / "h2t", CropBox((0.0, -1.0, -1.0), (1.0, 1.0, 1.0))
    first = distill(demo_run, "triplane", out, _train(20), FAST, quiet=True, crop=crop)
    assert first["student"]["steps"] == 20 and first["crop"] == crop.flat()
    with pytest.raises(Exception, match="already holds a run"):
        distill(demo_run, "triplane", out, _train(20), FAST, quiet=True)
    again = distill(demo_run, "triplane", out, _train(60), FAST, resume=True, quiet=True)
    assert again["student"]["steps"] == 60 and again["crop"] == crop.flat()
    # rays that cross only the left half: the teacher draws the object there, the student not
    teacher, student = load_model(demo_run).eval(), load_model(out).eval()
    x, y = torch.meshgrid(torch.linspace(-0.5, -0.1, 5), torch.linspace(-0.1, 0.2, 5),
                          indexing="ij")
    origins = torch.stack([x.reshape(-1), y.reshape(-1), torch.full((25,), -2.0)], -1)
    dirs = torch.tensor([[0.0, 0.0, 1.0]]).repeat(25, 1)
    with torch.no_grad():
        a_t = teacher.render_rays(origins, dirs, torch.zeros(3))["alpha"]
        a_s = student.render_rays(origins, dirs, torch.zeros(3))["alpha"]
    assert a_t.mean() > 0.5 and a_s.mean() < 0.05, (a_t.mean(), a_s.mean())


def test_resume_is_exact_across_the_stage_switch(demo_run, tmp_path, monkeypatch):
    """Stopped after 2 of 30 steps (still stage 1; the switch to stage 2 and its fresh Adam
    come at step 3), then resumed: the same student as an uninterrupted run."""
    from safetensors.torch import load_file

    from fieldkit.distill.field import FieldDistillTrainer

    straight = distill(demo_run, "triplane", tmp_path / "a", _train(30), FAST, quiet=True)
    done = FieldDistillTrainer.done

    def stop_after_two(self):
        if self.step_count >= 2:
            self._interrupted = True          # what Ctrl-C does
        return done(self)

    monkeypatch.setattr(FieldDistillTrainer, "done", stop_after_two)
    first = distill(demo_run, "triplane", tmp_path / "b", _train(30), FAST, quiet=True)
    assert first["interrupted"] and first["steps"] == 2
    monkeypatch.undo()
    resumed = distill(demo_run, "triplane", tmp_path / "b", _train(30), FAST, resume=True,
                      quiet=True)
    assert resumed["student"]["steps"] == straight["student"]["steps"] == 30
    a = load_file(tmp_path / "a" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_novel_views_surround_the_training_cameras(demo_run):
    from fieldkit.distill.views import novel_cameras, sphere_cameras, train_cameras
    from fieldkit.train.run import read_config

    cams, source = train_cameras(demo_run, read_config(demo_run))
    assert source == "run" and len(cams) == 100
    novel = novel_cameras(cams, 50, seed=3)
    r_train = cams.positions.norm(dim=-1)
    r_novel = novel.positions.norm(dim=-1)
    assert float(r_novel.min()) > 0.8 * float(r_train.min())
    assert float(r_novel.max()) < 1.2 * float(r_train.max())
    # every novel view looks at (near) the centre: the optical axis passes close to it
    fwd = novel.c2w[:, :3, 2]
    closest = novel.positions - (novel.positions * fwd).sum(-1, keepdim=True) * fwd
    assert float(closest.norm(dim=-1).max()) < 0.3 * float(r_novel.min())
    assert torch.equal(novel_cameras(cams, 5, seed=3).c2w, novel[:5].c2w)  # seeded
    sphere = sphere_cameras(10, bound=1.0)
    assert len(sphere) == 10 and float(sphere.positions.norm(dim=-1).min()) > 3.0


@pytest.mark.parametrize("argv,needle", [
    (["distill", "nowhere", "--to", "splat"], "is not a fieldkit run"),
    (["distill", "{run}", "--to", "mlp", "--max-time", "-3"], "--max-time must be"),
    (["distill", "{run}", "--to", "mlp", "--out", "{run}"], "--out must differ"),
    (["distill", "{run}", "--to", "mlp", "--out", "{tmp}", "--resume"], "no distillation"),
    (["distill", "{run}", "--to", "mlp", "--triplane.encoder.features", "2"],
     "use --mlp.* instead"),
    (["distill", "{run}", "--to", "mlp", "--max-gaussians", "1000"], "for splat models"),
])
def test_distill_errors_are_one_line(capsys, demo_run, tmp_path, argv, needle):
    (tmp_path / "config.json").write_text(json.dumps({"scene": "x"}))
    argv = [a.format(run=demo_run, tmp=tmp_path) for a in argv]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_distill_takes_the_students_model_settings(demo_run, tmp_path, capsys):
    """`fieldkit distill --to triplane --triplane.encoder...`: the student is the preset with
    the flags on top, as `fieldkit train` builds it (e.g. a smaller tri-plane to compress)."""
    out = tmp_path / "small"
    assert main(["distill", str(demo_run), "--to", "triplane", "--out", str(out),
                 "--max-steps", "2", "--preset", "fast", "--triplane.encoder.features", "2",
                 "--lr", "0.01", "--distill.bank-views", "4", "--distill.bank-rays", "2048",
                 "--distill.held-out-views", "1", "--distill.gt-views", "0"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["config"]["encoder"]["features"] == 2                 # the flag
    assert saved["model"]["config"]["encoder"]["resolutions"] == [32, 64, 128]  # the preset
    assert saved["train"]["lr"] == 0.01
    report = json.loads((out / "distill.json").read_text())
    # 3 planes x (32^2 + 64^2 + 128^2) texels x 2 channels, plus the decoder
    planes = 3 * 2 * (32 ** 2 + 64 ** 2 + 128 ** 2)
    assert planes < report["student"]["num_params"] < planes + 20000
    capsys.readouterr()


def test_student_defaults_apply_to_the_default_preset_only_and_yield_to_flags():
    """A default tri-plane student has STUDENT_DEFAULTS' 8 channels (a splat student 50k
    initial Gaussians); another preset keeps its own, and a flag wins, even one that names the
    model's own default (4)."""
    import tyro

    from fieldkit.commands.distill import Distill

    def student(*flags):
        cmd = tyro.cli(Distill, args=["run", "--to", "triplane", *flags])
        return cmd.model_config("triplane")

    assert student().encoder.features == 8
    assert student("--preset", "fast").encoder.features == 4
    assert student("--preset", "fast").encoder.resolutions == (32, 64, 128)
    assert student("--triplane.encoder.features", "4").encoder.features == 4
    assert student("--triplane.tv-weight", "0").encoder.features == 8
    assert student_config("hashgrid") == preset_config("hashgrid")
    # a splat student seeds 50k Gaussians at the teacher's surface (the model: 20k random)
    assert preset_config("splat").init_points == 20000
    splat = tyro.cli(Distill, args=["run", "--to", "splat"]).model_config("splat")
    assert splat.init_points == 50000
    splat = tyro.cli(Distill, args=["run", "--to", "splat", "--splat.init-points", "20000",
                                    "--max-gaussians", "9000"]).model_config("splat")
    assert splat.init_points == 20000 and splat.densify.max_gaussians == 9000
    assert tyro.cli(Distill, args=["run", "--to", "splat", "--preset", "fast"]
                    ).model_config("splat").init_points == 10000
    # the command's section defaults are the students' defaults, for every kind
    for kind in ("hashgrid", "triplane", "mlp", "splat"):
        field = next(f for f in dataclasses.fields(Distill) if f.name == kind)
        assert field.default_factory() == student_config(kind), kind


def test_the_default_budget_covers_the_teacher_renders(tmp_path):
    """No --max-time: a quarter of the teacher's training time for a field student, all of it
    for a splat student, for the whole distillation: the teacher's render time comes out of the
    student's (any time budget)."""
    from fieldkit.distill.run import default_budget, without_teacher_time
    from fieldkit.distill.source import teacher_train_seconds

    (tmp_path / "log.jsonl").write_text(json.dumps({"step": 10, "elapsed": 300.0}) + "\n")
    budget = default_budget(TrainConfig(), teacher_train_seconds(tmp_path), "triplane")
    assert budget.max_time == 75.0
    assert default_budget(TrainConfig(), 300.0, "splat").max_time == 300.0
    # splats on either side get the teacher's whole time; a quarter between fields
    assert default_budget(TrainConfig(), 300.0, "hashgrid", "splat").max_time == 300.0
    assert default_budget(TrainConfig(), 300.0, "mlp", "triplane").max_time == 75.0
    assert default_budget(TrainConfig(), None, "splat").max_steps == 2000
    assert without_teacher_time(budget, 12.0).max_time == 63.0
    assert without_teacher_time(budget, 70.0).max_time == 37.5   # half the budget at least
    assert without_teacher_time(TrainConfig(max_steps=5), 12.0).max_steps == 5
    assert default_budget(TrainConfig(max_time=40.0), 300.0, "splat").max_time == 40.0
