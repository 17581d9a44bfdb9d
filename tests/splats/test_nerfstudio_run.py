"""nerfstudio splatfacto checkpoints and config.yml, read without nerfstudio."""
from __future__ import annotations

import pytest
import torch

from fieldkit.errors import FieldkitError
from fieldkit.splats import nerfstudio_run
from fieldkit.splats.foreign import latest_in
from fieldkit.splats.gsplat_folder import read_config_yaml
from fieldkit.splats.nerfstudio_run import SH_C0, read_splatfacto_checkpoint, run_dataset
from tests.conftest import DEMO_SCENE
from tests.distill.test_splatfacto_run import NS_CONFIG, write_splatfacto_run
from tests.splats.test_gsplat_folder import _params, assert_one_line_error


def test_a_checkpoint_reads_as_splat_params(tmp_path):
    params = _params(50, degree=3)
    run = write_splatfacto_run(tmp_path, params)
    assert latest_in(run).name == "step-000002999.ckpt"
    back = read_splatfacto_checkpoint(latest_in(run))
    for key, value in params.items():
        assert torch.equal(back[key], value), key


def test_sh_degree_0_colours_are_logits(tmp_path):
    params = _params(20, degree=0)
    logits = torch.randn(20, 3)
    params["sh0"] = logits[:, None]
    run = write_splatfacto_run(tmp_path, params)
    back = read_splatfacto_checkpoint(latest_in(run))
    assert back["shN"].shape == (20, 0, 3)
    assert torch.allclose(back["sh0"][:, 0] * SH_C0 + 0.5, torch.sigmoid(logits), atol=1e-6)


def test_a_run_without_checkpoints_says_so(tmp_path):
    run = write_splatfacto_run(tmp_path, _params())
    for f in (run / "nerfstudio_models").iterdir():
        f.unlink()
    with pytest.raises(FieldkitError, match="without checkpoints"):
        latest_in(run)


@pytest.mark.parametrize("content, message", [
    (b"garbage", "loads as tensors only"),
    ("code", "loads as tensors only"),
    ({"step": 1, "model": {}}, "no 'pipeline' entry"),
    ({"step": 1, "pipeline": {"_model.field.mlp.weight": torch.zeros(2)}}, "holds no Gaussians"),
    ({"step": 1, "pipeline": {"_model.gauss_params.means": torch.zeros(2, 3)}}, "lack scales"),
    ({"step": 1, "pipeline": {f"_model.gauss_params.{k}": v for k, v in {
        "means": torch.zeros(2, 3), "scales": torch.zeros(2, 3), "quats": torch.zeros(2, 4),
        "opacities": torch.zeros(2, 1), "features_dc": torch.zeros(2, 3),
        "features_rest": torch.zeros(2, 5, 3)}.items()}}, "features_rest has shape"),
])
def test_malformed_checkpoints_give_one_line_errors(tmp_path, content, message):
    assert_one_line_error(read_splatfacto_checkpoint, tmp_path / "step-000000001.ckpt", content,
                          message)


def test_the_config_names_the_dataset_where_ns_train_ran(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "demo").symlink_to(DEMO_SCENE)
    run = write_splatfacto_run(tmp_path, _params())
    cfg = read_config_yaml(run / "config.yml", "ns-train")
    assert cfg["pipeline"]["datamanager"]["dataparser"]["data"] == "data/demo"   # an alias
    assert run_dataset(run, cfg) == (tmp_path / "data" / "demo", 2)
    auto = NS_CONFIG.replace("downscale_factor: 2", "downscale_factor: null")
    cfg = read_config_yaml_text(tmp_path, auto)
    assert run_dataset(run, cfg)[1] == 1
    monkeypatch.setattr(nerfstudio_run, "MAX_SIDE", 40)    # the demo's photos are 96 px
    assert run_dataset(run, cfg)[1] == 4
    assert run_dataset(run, {**cfg, "timestamp": "other"}) is None   # not where it ran


def read_config_yaml_text(tmp_path, text: str) -> dict:
    path = tmp_path / "other.yml"
    path.write_text(text)
    return read_config_yaml(path, "ns-train")
