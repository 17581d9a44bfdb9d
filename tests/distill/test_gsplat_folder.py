"""gsplat's simple_trainer results, in its normalised frame, distilled in their dataset's world:
the demo's splats moved into that frame of a COLMAP copy of the demo scene."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from fieldkit.cli import main
from fieldkit.data.scene import read_raw
from fieldkit.distill.run import distill
from fieldkit.distill.source import open_teacher
from fieldkit.errors import FieldkitError
from fieldkit.splats.frame import opaque_centres
from fieldkit.splats.gsplat_folder import frame_candidates, write_gsplat_result
from fieldkit.splats.ply import read_splat_ply
from fieldkit.splats.transform import transform_splats
from fieldkit.train.run import read_config
from tests.data.synthetic import colmap_scene
from tests.distill.test_distill import FAST, _train
from tests.distill.test_source import PLY_STEPS

SIGN = 2
"""The frame's sign the test folder uses (not the first candidate: the search must find it)."""
GSPLAT_FLOOR = 24.0
"""Student vs teacher (dB) after PLY_STEPS steps from the gsplat folder, 2.5 dB under the 26.49
measured (the demo's splats with the 10 training cameras of the COLMAP copy)."""


@pytest.fixture(scope="module")
def colmap_demo(demo_ply, tmp_path_factory) -> Path:
    """A COLMAP copy of the demo scene whose sparse points are 2000 of the splats' opaque
    centres (gsplat starts its Gaussians from them)."""
    params = read_splat_ply(demo_ply)
    centres = opaque_centres(params["means"], params["opacities"])
    pick = torch.randperm(len(centres), generator=torch.Generator().manual_seed(0))[:2000]
    return colmap_scene(tmp_path_factory.mktemp("gsplat") / "colmap_demo",
                        points=centres[pick].numpy())


@pytest.fixture(scope="module")
def gsplat_result(demo_ply, colmap_demo, tmp_path_factory) -> Path:
    """A gsplat results folder of those splats: trained on ``colmap_demo`` at factor 2, in its
    normalised frame."""
    raw = read_raw(colmap_demo)
    frame = frame_candidates(raw.c2w, raw.points)[SIGN]
    s = float(np.cbrt(np.linalg.det(frame[:3, :3])))
    moved = transform_splats(read_splat_ply(demo_ply), torch.from_numpy(frame[:3, :3] / s), s,
                             torch.from_numpy(frame[:3, 3]))
    folder = tmp_path_factory.mktemp("gsplat") / "results" / "demo"
    write_gsplat_result(folder, moved, 6999, str(colmap_demo), data_factor=2)
    return folder


def test_a_gsplat_folder_is_brought_back_into_its_datasets_world(gsplat_result, demo_ply,
                                                                colmap_demo):
    source = open_teacher(gsplat_result)
    assert source.camera_source == "scene" and source.is_ply and source.path == gsplat_result
    assert source.model_file.name == "ckpt_6999_rank0.pt"
    assert source.config["scene"] == str(colmap_demo.resolve()) and source.config["downscale"] == 2
    same = open_teacher(demo_ply, scene=colmap_demo, downscale=2)
    assert torch.allclose(source.cameras.c2w, same.cameras.c2w)
    for key in ("means", "scales", "opacities", "sh0"):
        assert torch.allclose(source.model.params[key], same.model.params[key], atol=1e-4), key


def test_distil_a_gsplat_folder(gsplat_result, tmp_path):
    out = tmp_path / "gsplat2hash"
    report = distill(gsplat_result, "hashgrid", out, _train(PLY_STEPS), FAST, quiet=True)
    assert report["cameras"] == "scene" and report["vs_photos"]["views"] == 2
    ckpt = gsplat_result / "ckpts" / "ckpt_6999_rank0.pt"
    assert report["teacher"]["bytes_on_disk"] == ckpt.stat().st_size
    print(f"gsplat folder -> hashgrid: {report['vs_teacher']['psnr']:.2f} dB vs the teacher")
    assert report["vs_teacher"]["psnr"] > GSPLAT_FLOOR
    assert read_config(out)["distill"]["from_file"]


def test_a_bare_checkpoint_takes_the_frame_from_scene(gsplat_result, colmap_demo, tmp_path):
    """Out of its folder (no cfg.yml), a checkpoint is in gsplat's frame only when asked
    (``--ply-transform gsplat``), which needs the dataset (``--scene``); a resume keeps both."""
    bare = tmp_path / "ckpt_6999_rank0.pt"
    shutil.copy(gsplat_result / "ckpts" / bare.name, bare)
    folder = open_teacher(gsplat_result)
    asked = open_teacher(bare, scene=colmap_demo, downscale=2, ply_transform=Path("gsplat"))
    assert torch.allclose(asked.model.params["means"], folder.model.params["means"], atol=1e-4)
    with pytest.raises(FieldkitError, match="pass it with --scene"):
        open_teacher(bare, ply_transform=Path("gsplat"))
    plain = open_teacher(bare, scene=colmap_demo, downscale=2)   # read as world units
    assert (plain.model.params["means"] - folder.model.params["means"]).norm(dim=-1).median() > 0.1
    out = tmp_path / "bare"
    args = ["distill", str(bare), "--to", "triplane", "--scene", str(colmap_demo),
            "--downscale", "2", "--ply-transform", "gsplat", "--out", str(out),
            "--distill.held-out-views", "2", "--distill.bank-views", "8",
            "--distill.bank-rays", "4096", "--distill.gt-views", "2"]
    assert main(args + ["--max-steps", "5"]) == 0
    assert read_config(out)["distill"]["ply_transform"] == "gsplat"
    assert main(["distill", str(bare), "--to", "triplane", "--out", str(out), "--max-steps",
                 "10", "--resume"]) == 0
    report = json.loads((out / "distill.json").read_text())
    assert report["cameras"] == "scene" and report["student"]["steps"] == 10
    assert report["vs_photos"]["student"]["psnr"] > 10


def test_a_gsplat_folder_whose_dataset_is_elsewhere_circles_its_gaussians(gsplat_result,
                                                                          tmp_path):
    elsewhere = tmp_path / "results" / "demo"
    shutil.copytree(gsplat_result, elsewhere)
    cfg = (elsewhere / "cfg.yml").read_text()
    (elsewhere / "cfg.yml").write_text(cfg.replace(str(read_config_scene(gsplat_result)),
                                                   "/nowhere/demo"))
    with pytest.warns(UserWarning, match="is not here"):
        source = open_teacher(elsewhere)
    assert source.camera_source == "sphere"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scene = read_config_scene(gsplat_result)
        assert open_teacher(elsewhere, scene=scene, downscale=2).camera_source == "scene"


def read_config_scene(folder: Path) -> Path:
    from fieldkit.splats.gsplat_folder import read_gsplat_cfg

    return Path(read_gsplat_cfg(folder)["data_dir"])


def test_a_gsplat_checkpoint_error_is_one_line(capsys, tmp_path):
    (tmp_path / "ckpt_1_rank0.pt").write_bytes(b"garbage")
    assert main(["distill", str(tmp_path / "ckpt_1_rank0.pt"), "--to", "hashgrid"]) != 0
    err = capsys.readouterr().err
    assert "tensors only" in err and err.count("\n") == 1, err


def test_the_viewer_opens_a_gsplat_folder_in_its_datasets_world(gsplat_result, demo_ply,
                                                                colmap_demo):
    """``fieldkit view RESULTS``: the newest checkpoint, back in the dataset's world, with the
    dataset's training cameras (and photos) there."""
    from fieldkit.data.scene import load_cameras
    from fieldkit.viewer.server import open_sources

    (source,) = open_sources(gsplat_result)
    assert source.label == gsplat_result.name and source.ply_path.suffix == ".pt"
    assert source.scene_path == colmap_demo and source.downscale == 2
    cams, splits, norm = load_cameras(colmap_demo, downscale=2)
    want = cams[splits["train"]].to_world(norm)
    assert torch.allclose(source.cameras.c2w, want.c2w, atol=1e-4)
    means = source.model.params["means"].detach()
    assert torch.allclose(means, read_splat_ply(demo_ply)["means"], atol=1e-4)


def test_a_ply_in_a_gsplat_folder_is_in_its_frame_too(gsplat_result, tmp_path):
    """``--save_ply``'s ``ply/point_cloud_N.ply`` lies in the same normalised frame as the
    checkpoints: read beside its cfg.yml, it comes back into the dataset's world as well."""
    from fieldkit.splats.gsplat_folder import latest_splats, read_gsplat_checkpoint
    from fieldkit.splats.ply import write_splat_ply

    folder = tmp_path / "results" / "demo"
    shutil.copytree(gsplat_result, folder)
    (folder / "ply").mkdir()
    ply = write_splat_ply(folder / "ply" / "point_cloud_29999.ply", read_gsplat_checkpoint(
        folder / "ckpts" / "ckpt_6999_rank0.pt"))
    assert latest_splats(folder) == ply
    source = open_teacher(ply)
    assert source.camera_source == "scene"
    want = open_teacher(gsplat_result).model.params["means"]
    assert torch.allclose(source.model.params["means"], want, atol=1e-4)
