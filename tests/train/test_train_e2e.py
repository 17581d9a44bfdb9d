"""End to end: train on the demo scene and on lego, resume exactly, survive Ctrl-C."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from fieldkit.train.config import TrainConfig
from fieldkit.train.evaluate import evaluate_run
from fieldkit.train.run import prepare, train
from tests.conftest import DEMO_SCENE, shared_scene

# A renderer that composites nothing (all background) scores ~13 dB on the demo scene's white
# background; a blurry but correct reconstruction is far above this floor.
DEMO_PSNR_FLOOR = 24.0
LEGO_PSNR_FLOOR = 22.0


def _config(**kw) -> TrainConfig:
    base = dict(eval_every=0, checkpoint_every=1e9, log_every=5, target_samples=1 << 14,
                init_rays=512)
    return TrainConfig(**{**base, **kw})


def test_demo_scene_trains_above_a_psnr_floor(demo_run):
    log = [json.loads(x) for x in (demo_run / "log.jsonl").read_text().splitlines() if x]
    assert log[-1]["step"] == 600
    metrics = evaluate_run(demo_run)
    assert metrics["num_views"] == 16
    print(f"demo: {metrics['psnr']:.2f} dB after {log[-1]['elapsed']:.0f} s")
    assert metrics["psnr"] > DEMO_PSNR_FLOOR, metrics["psnr"]
    saved = json.loads((demo_run / "metrics.json").read_text())
    assert saved["psnr"] == pytest.approx(metrics["psnr"])
    for name in ("config.json", "model.safetensors", "log.jsonl", "psnr.png"):
        assert (demo_run / name).is_file(), name
    assert (demo_run / "renders" / "test" / "0000.png").is_file()


def test_evaluation_compiles_the_hash_grid_when_the_views_ahead_pay_for_it(demo_run,
                                                                          monkeypatch):
    from fieldkit.train import evaluate

    asked = []
    monkeypatch.setattr(evaluate, "compile_if_it_pays",
                        lambda model, seconds: asked.append((model.kind, seconds)) or False)
    metrics = evaluate_run(demo_run, save_renders=False)
    # asked once, after the first view, with the other 15 views at its speed
    (kind, seconds), = asked
    assert kind == "hashgrid"
    assert 0 < seconds <= 15 * metrics["seconds_per_view"] * metrics["num_views"]


def test_lego_downscaled_trains_above_a_psnr_floor(tmp_path):
    root = shared_scene("lego-400")
    # A step budget, not a time budget, so a loaded machine cannot change the outcome.
    result = train(root, "hashgrid", tmp_path / "run", _config(max_steps=600), downscale=8)
    from fieldkit.train.run import load_model, load_run_scene

    scene = load_run_scene(result.run_dir)
    scene.splits["test"] = scene.splits["test"][::10]  # 20 of the 200 test views
    metrics = evaluate_run(result.run_dir, scene=scene, model=load_model(result.run_dir))
    print(f"lego: {metrics['psnr']:.2f} dB after {result.elapsed:.0f} s, {result.steps} steps")
    assert metrics["psnr"] > LEGO_PSNR_FLOOR, metrics["psnr"]


def test_resume_gives_identical_results(tmp_path):
    straight = train(DEMO_SCENE, "hashgrid", tmp_path / "a", _config(max_steps=60), downscale=4)
    # The same run stopped after 30 of its 60 steps (as Ctrl-C does), then resumed.
    first = prepare(DEMO_SCENE, "hashgrid", tmp_path / "b", _config(max_steps=60), downscale=4)
    for _ in range(30):
        first.step()
    first.save()
    resumed = train(DEMO_SCENE, "hashgrid", tmp_path / "b", _config(max_steps=60), downscale=4,
                    resume=True)
    assert resumed.steps == 60
    a = load_file(straight.run_dir / "model.safetensors")
    b = load_file(resumed.run_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    steps = [json.loads(line)["step"] for line in
             (resumed.run_dir / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 60


def test_a_budget_given_on_resume_replaces_the_saved_one(tmp_path):
    """A run stopped by its --max-time, resumed with --max-steps, trains on to those steps
    (the saved time limit no longer applies); resumed without a budget, it keeps the saved."""
    from fieldkit.train.config import resumed_config

    first = train(DEMO_SCENE, "hashgrid", tmp_path / "r", _config(max_time=1.0), downscale=4)
    assert first.steps > 0
    more = train(DEMO_SCENE, "hashgrid", tmp_path / "r", _config(max_steps=first.steps + 7),
                 downscale=4, resume=True)
    assert more.steps == first.steps + 7
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["train"]
    assert saved["max_steps"] == first.steps + 7 and saved["max_time"] is None
    kept = resumed_config({**saved, "max_time": 5.0, "lr": 0.02}, TrainConfig())
    assert (kept.max_steps, kept.max_time, kept.lr) == (first.steps + 7, 5.0, 0.02)
    given = resumed_config({**saved, "max_steps": 9, "lr": 0.02}, TrainConfig(max_time=3.0))
    assert (given.max_steps, given.max_time, given.lr) == (None, 3.0, 0.02)


def test_existing_run_needs_resume_flag(tmp_path, capsys):
    from fieldkit.cli import main

    train(DEMO_SCENE, "hashgrid", tmp_path / "r", _config(max_steps=2), downscale=4)
    code = main(["train", str(DEMO_SCENE), "--out", str(tmp_path / "r"), "--max-steps", "2",
                 "--downscale", "4"])
    assert code == 1 and "pass --resume" in capsys.readouterr().err


def _train_cmd(run, *extra):
    return [sys.executable, "-m", "fieldkit.cli", "train", str(DEMO_SCENE), "--out", str(run),
            "--downscale", "4", "--no-final-eval", "--no-video", *extra]


def _interrupt(proc, wait_for, timeout=180.0):
    """SIGINT ``proc`` once ``wait_for()`` holds; its (stdout, stderr). Killed if it hangs."""
    deadline = time.time() + timeout
    while not wait_for() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"still running 120 s after Ctrl-C: {proc.communicate()[1][-2000:]}")


def _saved_step(run) -> int:
    try:
        return json.loads((run / "checkpoint" / "state.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(tmp_path):
    """Ctrl-C mid-training (after a periodic checkpoint at step > 0): one more checkpoint,
    exit code 130 and the resume command; --resume then continues from it."""
    run = tmp_path / "run"
    env = {**os.environ, "FIELDKIT_QUIET": "1"}
    cmd = _train_cmd(run, "--max-steps", "100000", "--checkpoint-every", "0.5")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    out, err = _interrupt(proc, lambda: _saved_step(run) > 0)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    stopped_at = _saved_step(run)
    assert stopped_at > 0
    done = subprocess.run(_train_cmd(run, "--max-steps", str(stopped_at + 20), "--resume"),
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _saved_step(run) == stopped_at + 20


def test_ctrl_c_during_set_up_leaves_a_run_that_resumes(tmp_path):
    """Ctrl-C as soon as config.json is written (the model and trainer are still being set up,
    torch still importing): no traceback, no hang, a checkpoint and the resume command."""
    run = tmp_path / "run"
    env = {**os.environ, "FIELDKIT_QUIET": "1"}
    proc = subprocess.Popen(_train_cmd(run, "--max-steps", "100000"), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = _interrupt(proc, lambda: (run / "config.json").exists())
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err, err
    stopped_at = _saved_step(run)
    assert (run / "checkpoint" / "state.json").exists()
    done = subprocess.run(_train_cmd(run, "--max-steps", str(stopped_at + 5), "--resume"),
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _saved_step(run) == stopped_at + 5
