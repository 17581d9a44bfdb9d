"""Every volumetric model trains on the demo scene past a PSNR floor, through the same trainer,
run directory, eval and render code; a run rebuilds its model from config.json alone."""
import json

import pytest

from fieldkit.fields.registry import model_class
from fieldkit.train.config import TrainConfig
from fieldkit.train.evaluate import evaluate_run
from fieldkit.train.run import load_model, prepare, train
from tests.conftest import DEMO_SCENE

# All-background renders score ~13 dB on the demo test views; a field that learned nothing
# stays there, and a broken renderer or optimiser lands below it.
FLOORS = {"hashgrid": 20.0, "triplane": 20.0, "mlp": 17.0}
STEPS = {"hashgrid": 250, "triplane": 250, "mlp": 250}


@pytest.mark.parametrize("kind", ["hashgrid", "triplane", "mlp"])
def test_each_model_trains_on_the_demo_scene(kind, tmp_path):
    config = TrainConfig(max_steps=STEPS[kind], eval_every=0, checkpoint_every=1e9, log_every=5,
                         init_rays=512)
    result = train(DEMO_SCENE, kind, tmp_path / "run", config, downscale=4, preset="fast")
    saved = json.loads((result.run_dir / "config.json").read_text())
    assert saved["model"]["kind"] == kind and saved["model"]["preset"] == "fast"
    assert saved["train"]["background"] == "random"  # auto: the demo images have alpha
    model = load_model(result.run_dir)
    assert type(model) is model_class(kind) and model.num_params == saved["model"]["num_params"]
    metrics = evaluate_run(result.run_dir, save_renders=False)
    print(f"{kind}: {metrics['psnr']:.2f} dB after {result.steps} steps, {result.elapsed:.0f} s")
    assert metrics["psnr"] > FLOORS[kind], metrics["psnr"]



@pytest.mark.parametrize("kind,given,expected", [
    ("hashgrid", None, 1 << 14), ("triplane", None, 1 << 14), ("mlp", None, 1 << 12),
    ("mlp", 3000, 3000)])
def test_a_step_adapts_to_the_models_samples_unless_the_config_says(kind, given, expected,
                                                                    tmp_path):
    """TrainConfig.target_samples unset: the model's own (an MLP's is 2^12). Each step sizes
    the next ray batch to see about that many samples (within 256 to max_rays rays)."""
    config = TrainConfig(max_steps=6, eval_every=0, checkpoint_every=1e9, init_rays=256,
                         target_samples=given)
    trainer = prepare(DEMO_SCENE, kind, tmp_path / "run", config, downscale=4, preset="fast")
    assert trainer.target_samples == expected
    for _ in range(4):
        stats = trainer.step()
        wanted = round(stats["rays"] * expected / stats["samples"])
        assert trainer.n_rays == min(config.max_rays, max(256, wanted)), stats
