"""The command-line contract from the design brief."""
import json

import pytest

from fieldkit.cli import main
from fieldkit.data.scene import load_scene
from tests.conftest import DEMO_SCENE, shared_scene


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "eval", "render", "export", "distill", "view", "scene", "doctor"):
        assert command in out


def test_train_help_shows_field_docstrings(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--max-steps" in out and "--downscale" in out and "Reduce images by this" in out


def test_scene_info_on_the_demo_scene(capsys):
    assert main(["scene", "info", str(DEMO_SCENE), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "blender"
    assert info["splits"] == {"train": 100, "val": 8, "test": 16}
    assert info["resolutions"] == {"96x96": 124}
    assert info["camera_models"] == {"PINHOLE": 124}
    assert info["num_points"] == 0
    assert info["normalisation"]["scale"] == pytest.approx(1 / 1.5)
    assert main(["scene", "info", str(DEMO_SCENE)]) == 0
    text = capsys.readouterr().out
    assert "Blender" in text and "train 100, val 8, test 16" in text


@pytest.mark.parametrize("name,fmt,images,points", [
    ("lego-400", "blender", 400, 0), ("fox", "ngp", None, 0), ("beer-colmap", "colmap", 71, 4414)])
def test_scene_info_on_real_scenes(capsys, name, fmt, images, points):
    root = shared_scene(name)
    assert main(["scene", "info", str(root), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == fmt and info["num_points"] == points
    if images is not None:
        assert info["num_images"] == images
    assert sum(info["splits"].values()) == info["num_images"]


@pytest.mark.parametrize("argv", [["eval", "nowhere"], ["render", "nowhere", "--out", "v.mp4"]])
def test_eval_and_render_of_a_folder_that_is_no_run(capsys, argv):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere does not exist; pass a run folder" in err


def test_bad_option_value_exits_with_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "scene", "--max-steps", "many"])
    assert exit_info.value.code == 2
    assert "max-steps" in capsys.readouterr().err


def test_doctor_reports_torch_and_backends(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "nerfacc" in out and "gsplat" in out and "tinycudann" in out
    # the suite runs with FIELDKIT_CPU_COMPILE=off (tests/conftest.py)
    assert "cpu render eager" in " ".join(out.split()) and "FIELDKIT_CPU_COMPILE is off" in out
    from fieldkit.fields.radiance import cpu_bf16_status

    mlp = "cpu mlp bfloat16" if cpu_bf16_status()[0] else "cpu mlp float32"
    assert mlp in " ".join(out.split())


def test_scene_demo_generates_a_loadable_scene(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["scene", "demo", str(out), "--size", "32"]) == 0
    scene = load_scene(out)
    assert scene.image(0).shape == (32, 32, 4) and len(scene.split("train")) == 100


def test_train_takes_a_model_a_preset_and_per_field_overrides(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(DEMO_SCENE), "--model", "triplane", "--preset", "fast",
                 "--triplane.encoder.features", "2", "--max-steps", "3", "--downscale", "4",
                 "--out", str(out), "--no-final-eval", "--no-video"]) == 0
    saved = json.loads((out / "config.json").read_text())["model"]
    assert saved["kind"] == "triplane" and saved["preset"] == "fast"
    assert saved["config"]["encoder"]["features"] == 2                 # the flag
    assert saved["config"]["encoder"]["resolutions"] == [32, 64, 128]  # the preset
    with pytest.raises(SystemExit) as exc:                             # tyro rejects the choice
        main(["train", str(DEMO_SCENE), "--model", "mlp", "--max-steps", "1", "--preset", "huge"])
    assert exc.value.code == 2
    capsys.readouterr()
