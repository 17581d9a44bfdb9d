"""A nerfstudio splatfacto run folder read directly (no ``ns-export``): the demo's splats in a
dataparser frame, saved as ``ns-train splatfacto`` saves them, with a config.yml naming the demo
scene relative to where it ran."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from fieldkit.distill.run import distill
from fieldkit.distill.source import open_teacher
from fieldkit.splats.foreign import latest_in
from fieldkit.splats.ply import read_splat_ply
from fieldkit.splats.transform import transform_splats
from tests.conftest import DEMO_SCENE
from tests.distill.test_distill import FAST, _train
from tests.distill.test_source import NS_SCALE, NS_SHIFT, _turn

NS_CONFIG = """\
!!python/object:nerfstudio.engine.trainer.TrainerConfig
_target: !!python/name:nerfstudio.engine.trainer.Trainer ''
data: &id001 !!python/object/apply:pathlib.PosixPath
- data
- demo
experiment_name: demo
method_name: splatfacto
output_dir: !!python/object/apply:pathlib.PosixPath
- outputs
pipeline: !!python/object:nerfstudio.pipelines.base_pipeline.VanillaPipelineConfig
  _target: !!python/name:nerfstudio.pipelines.base_pipeline.VanillaPipeline ''
  datamanager: !!python/object:nerfstudio.data.datamanagers.full_images_datamanager.FullImageDatamanagerConfig
    cache_images: cpu
    data: *id001
    dataparser: !!python/object:nerfstudio.data.dataparsers.blender_dataparser.BlenderDataParserConfig
      data: *id001
      downscale_factor: 2
      scale_factor: 1.0
  model: !!python/object:nerfstudio.models.splatfacto.SplatfactoModelConfig
    sh_degree: 3
    camera_optimizer: !!python/object:nerfstudio.cameras.camera_optimizers.CameraOptimizerConfig
      mode: 'off'
timestamp: 2026-12-06_101500
"""


def write_splatfacto_run(root: Path, params: dict[str, torch.Tensor], step: int = 2999,
                         config: str = NS_CONFIG) -> Path:
    """``root/outputs/demo/splatfacto/TIMESTAMP`` as ``ns-train`` leaves it, holding ``params``
    (already in the frame of ``dataparser_transforms.json``, which the caller writes)."""
    run = root / "outputs" / "demo" / "splatfacto" / "2026-12-06_101500"
    (run / "nerfstudio_models").mkdir(parents=True)
    (run / "config.yml").write_text(config)
    n = len(params["means"])
    state = {f"_model.gauss_params.{k}": v for k, v in (
        ("means", params["means"]), ("scales", params["scales"]), ("quats", params["quats"]),
        ("opacities", params["opacities"].reshape(n, 1)),
        ("features_dc", params["sh0"][:, 0]), ("features_rest", params["shN"]))}
    state["_model.camera_optimizer.pose_adjustment"] = torch.zeros(3, 6)
    torch.save({"step": step, "pipeline": state,
                "optimizers": {"means": {"state": {}, "param_groups": [{"lr": 1.6e-4,
                                                                       "params": [0]}]}},
                "scalers": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0}},
               run / "nerfstudio_models" / f"step-{step:09d}.ckpt")
    return run


@pytest.fixture(scope="module")
def splatfacto_run(demo_ply, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ns")
    (root / "data").mkdir()
    os.symlink(DEMO_SCENE, root / "data" / "demo")
    R, t, s = _turn(), NS_SHIFT, NS_SCALE
    run = write_splatfacto_run(root, transform_splats(read_splat_ply(demo_ply), R, s, s * t))
    (run / "dataparser_transforms.json").write_text(json.dumps(
        {"transform": torch.cat([R, t[:, None]], 1).tolist(), "scale": s}))
    return run


def _same_gaussians(a, b) -> None:
    for key in ("means", "scales", "opacities", "quats", "sh0", "shN"):
        x, y = a.model.params[key], b.model.params[key]
        if key == "quats":      # q and -q are the same rotation
            x, y = x * torch.sign(x[:, :1]), y * torch.sign(y[:, :1])
        assert torch.allclose(x, y, atol=1e-4), key


def test_a_splatfacto_run_comes_back_into_its_datasets_world(splatfacto_run, demo_splat_run):
    source = open_teacher(splatfacto_run)
    assert source.camera_source == "scene" and source.is_ply and source.path == splatfacto_run
    assert source.model_file.name == "step-000002999.ckpt"
    assert Path(source.config["scene"]) == (splatfacto_run.parents[3] / "data" / "demo").resolve()
    assert source.config["downscale"] == 2
    _same_gaussians(source, open_teacher(demo_splat_run))
    _same_gaussians(open_teacher(source.model_file), source)   # the checkpoint alone


def test_distil_a_splatfacto_run(splatfacto_run, tmp_path):
    report = distill(splatfacto_run, "triplane", tmp_path / "s", _train(10), FAST, quiet=True)
    assert report["cameras"] == "scene" and report["vs_photos"]["views"] == 6
    ckpt = splatfacto_run / "nerfstudio_models" / "step-000002999.ckpt"
    assert report["teacher"]["bytes_on_disk"] == ckpt.stat().st_size
    again = distill(splatfacto_run, "triplane", tmp_path / "s", _train(20), FAST, resume=True,
                    quiet=True)
    assert again["student"]["steps"] == 20 and again["cameras"] == "scene"
    # the student keeps nerfstudio's frame: a camera_path.json made there shows its test views
    from fieldkit.export.render import camera_path
    from tests.distill.test_nerfstudio_path import _nerfstudio_file, _same_cameras, _test_cameras

    assert "nerfstudio_frame" in json.loads((tmp_path / "s" / "config.json").read_text())
    path = _nerfstudio_file(tmp_path / "camera_path.json", _test_cameras())
    _same_cameras(camera_path(tmp_path / "s", str(path), 0, None, None),
                  camera_path(tmp_path / "s", "test", 0, None, None)[:3])


def test_a_splatfacto_run_whose_dataset_is_elsewhere(splatfacto_run, demo_splat_run, tmp_path):
    """Moved to another machine: the Gaussians still come back into the dataset's world (the
    dataparser transform is in the run), viewed from a sphere; ``--scene`` gives the cameras."""
    import shutil

    moved = tmp_path / "run"
    shutil.copytree(splatfacto_run, moved)
    with pytest.warns(UserWarning, match="is not here"):
        alone = open_teacher(moved)
    assert alone.camera_source == "sphere"
    with_scene = open_teacher(moved, scene=DEMO_SCENE, downscale=2)
    assert with_scene.camera_source == "scene"
    _same_gaussians(with_scene, open_teacher(demo_splat_run))
    (moved / "dataparser_transforms.json").unlink()
    with pytest.raises(Exception, match="has no dataparser_transforms.json"):
        open_teacher(moved, scene=DEMO_SCENE)


def test_the_viewer_opens_a_splatfacto_run_with_its_datasets_cameras(splatfacto_run,
                                                                     demo_ply):
    from fieldkit.data.scene import load_cameras
    from fieldkit.viewer.server import open_sources

    (source,) = open_sources(splatfacto_run)
    assert source.label == splatfacto_run.name and source.downscale == 2
    cams, splits, norm = load_cameras(DEMO_SCENE, downscale=2)
    assert torch.allclose(source.cameras.c2w, cams[splits["train"]].to_world(norm).c2w,
                          atol=1e-4)
    assert torch.allclose(source.model.params["means"].detach(),
                          read_splat_ply(demo_ply)["means"], atol=1e-4)


def test_a_colmap_dataset_turned_by_nerfstudio_is_turned_back(demo_ply, tmp_path):
    """nerfstudio's COLMAP dataparser turns the COLMAP world (y and z swapped, one negated)
    before its dataparser transform; fieldkit reads the COLMAP model unturned, so the
    Gaussians are turned back as well."""
    from fieldkit.splats.nerfstudio_run import COLMAP_AXES
    from tests.data.synthetic import colmap_scene

    colmap_scene(tmp_path / "data" / "demo")
    config = NS_CONFIG.replace(
        "nerfstudio.data.dataparsers.blender_dataparser.BlenderDataParserConfig",
        "nerfstudio.data.dataparsers.colmap_dataparser.ColmapDataParserConfig")
    R, t, s = _turn(), NS_SHIFT, NS_SCALE
    turned = transform_splats(read_splat_ply(demo_ply), torch.from_numpy(COLMAP_AXES), 1.0,
                              torch.zeros(3, dtype=torch.float64))
    run = write_splatfacto_run(tmp_path, transform_splats(turned, R, s, s * t), config=config)
    (run / "dataparser_transforms.json").write_text(json.dumps(
        {"transform": torch.cat([R, t[:, None]], 1).tolist(), "scale": s}))
    source = open_teacher(run)
    assert Path(source.config["scene"]) == (tmp_path / "data" / "demo").resolve()
    _same_gaussians(source, open_teacher(demo_ply, scene=tmp_path / "data" / "demo",
                                         downscale=2))
    # the frame saved for nerfstudio's camera paths takes the COLMAP world to the checkpoint's
    from fieldkit.data.normalize import Normalisation
    from fieldkit.splats.nerfstudio_run import read_splatfacto_checkpoint

    world = Normalisation.from_dict(source.config["normalisation"]).to_world(
        source.model.params["means"].detach().double())
    saved = read_splatfacto_checkpoint(latest_in(run))["means"].double()
    frame = Normalisation.from_dict(source.config["nerfstudio_frame"])
    assert torch.allclose(frame.to_box(world), saved, atol=1e-4)
    flag = config.replace("      downscale_factor: 2",
                          "      assume_colmap_world_coordinate_convention: false\n"
                          "      downscale_factor: 2")
    (run / "config.yml").write_text(flag)     # not turned: read as its frame says
    unturned = open_teacher(run)
    means = unturned.model.params["means"]
    assert not torch.allclose(means, source.model.params["means"], atol=1e-2)


def test_an_exported_ply_with_its_runs_transform_finds_the_run(splatfacto_run, demo_splat_run,
                                                               tmp_path):
    """``ns-export``'s .ply with ``--ply-transform RUN/dataparser_transforms.json``: the run's
    config.yml beside it names the dataset, as for the run itself."""
    from fieldkit.splats.nerfstudio_run import read_splatfacto_checkpoint
    from fieldkit.splats.ply import write_splat_ply

    ply = write_splat_ply(tmp_path / "splat.ply", read_splatfacto_checkpoint(
        splatfacto_run / "nerfstudio_models" / "step-000002999.ckpt"))
    source = open_teacher(ply, ply_transform=splatfacto_run / "dataparser_transforms.json")
    assert source.camera_source == "scene" and source.config["downscale"] == 2
    _same_gaussians(source, open_teacher(demo_splat_run))


def test_the_viewer_places_a_splat_file_as_distill_does(splatfacto_run, demo_ply, demo_run,
                                                        tmp_path, capsys):
    """``fieldkit view FILE.ply --scene S --ply-transform T``: the Gaussians in the scene's world
    with its cameras, as ``fieldkit distill`` would take them; a run refuses both."""
    from fieldkit.cli import main
    from fieldkit.splats.nerfstudio_run import read_splatfacto_checkpoint
    from fieldkit.splats.ply import write_splat_ply
    from fieldkit.viewer.server import open_sources

    ply = write_splat_ply(tmp_path / "splat.ply", read_splatfacto_checkpoint(
        splatfacto_run / "nerfstudio_models" / "step-000002999.ckpt"))
    transform = tmp_path / "dataparser_transforms.json"    # out of its run: no config.yml
    transform.write_text((splatfacto_run / "dataparser_transforms.json").read_text())
    (source,) = open_sources(ply, scene=DEMO_SCENE, downscale=2, ply_transform=transform)
    assert source.scene_path == DEMO_SCENE and len(source.cameras) > 0
    assert torch.allclose(source.model.params["means"].detach(),
                          read_splat_ply(demo_ply)["means"], atol=1e-4)
    (bare,) = open_sources(ply)
    assert bare.cameras is None
    assert main(["view", str(demo_run), "--scene", str(DEMO_SCENE)]) != 0
    err = capsys.readouterr().err
    assert "--scene and --ply-transform are for splat files" in err and err.count("\n") == 1
