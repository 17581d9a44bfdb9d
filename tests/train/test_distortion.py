"""``TrainConfig.distortion_weight`` adds the distortion loss of the rendered batch to the
training loss (its effect on a real capture: tests/train/test_unbounded.py)."""
from __future__ import annotations

import pytest
import torch

from fieldkit.train.config import TrainConfig
from fieldkit.train.run import prepare
from tests.conftest import DEMO_SCENE


def _first_step(run_dir, weight: float, monkeypatch) -> tuple[dict, list[float]]:
    config = TrainConfig(max_steps=5, eval_every=0, checkpoint_every=1e9, init_rays=512,
                         seed=0, distortion_weight=weight)
    trainer = prepare(DEMO_SCENE, "hashgrid", run_dir, config, downscale=4)
    seen = []
    render_rays = trainer.model.render_rays

    def spy(origins, dirs, bg, **kw):
        out = render_rays(origins, dirs, bg, **kw)
        seen.append(float(trainer._distortion(out, origins, dirs)))
        return out

    monkeypatch.setattr(trainer.model, "render_rays", spy)
    return trainer.step(), seen


def test_the_distortion_loss_joins_the_training_loss(tmp_path, monkeypatch):
    plain, _ = _first_step(tmp_path / "a", 0.0, monkeypatch)
    weighted, distortion = _first_step(tmp_path / "b", 0.5, monkeypatch)
    # same seed, same batches, same initial model: the loss differs by w * distortion only
    assert weighted["mse"] == plain["mse"]
    assert distortion[0] > 0
    assert weighted["loss"] - plain["loss"] == pytest.approx(0.5 * distortion[0], rel=1e-3)
    assert torch.isfinite(torch.tensor(weighted["loss"]))


@pytest.mark.parametrize("argv,needle", [
    (["--distortion-weight", "-0.1"], "must be 0 (off) or positive"),
    (["--model", "splat", "--distortion-weight", "0.01"], "is for volumetric models"),
])
def test_bad_distortion_settings_are_one_line_errors(tmp_path, capsys, argv, needle):
    from fieldkit.cli import main

    assert main(["train", str(DEMO_SCENE), "--out", str(tmp_path / "r"), *argv]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err
    assert not (tmp_path / "r" / "checkpoint").exists()
