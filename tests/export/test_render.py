"""`fieldkit render` end to end: frame count and size read back from the files, the paths, the
outputs (rgb, depth, both) and the field-of-view override, for a splat and a hash-grid run."""
import imageio.v3 as iio
import numpy as np
import pytest
import torch

from fieldkit.cli import main


def frames(path):
    return np.stack(list(iio.imiter(path)))


@pytest.mark.parametrize("path", ["orbit", "spiral", "interp"])
def test_paths_give_the_requested_frames(demo_splat_run, tmp_path, path):
    out = tmp_path / f"{path}.mp4"
    assert main(["render", str(demo_splat_run), "--out", str(out), "--path", path,
                 "--frames", "12", "--width", "64"]) == 0
    video = frames(out)
    assert video.shape == (12, 64, 64, 3)  # the demo's square frames, scaled to 64 wide
    assert video.std() > 10  # the object is in view, not a blank background


def test_outputs_and_fov(demo_splat_run, tmp_path):
    both, depth, wide = (tmp_path / n for n in ("both.mp4", "depth.gif", "wide.mp4"))
    assert main(["render", str(demo_splat_run), "--out", str(both), "--frames", "4",
                 "--output", "both", "--width", "48"]) == 0
    assert frames(both).shape == (4, 48, 96, 3)
    assert main(["render", str(demo_splat_run), "--out", str(depth), "--frames", "4",
                 "--output", "depth", "--width", "48"]) == 0
    d = frames(depth)
    assert d.shape[:3] == (4, 48, 48)
    assert np.abs(d[..., :3].astype(int) - frames(both)[:, :, 48:].astype(int)).mean() < 25
    assert main(["render", str(demo_splat_run), "--out", str(wide), "--frames", "4",
                 "--width", "48", "--fov", "120"]) == 0
    # a much wider view makes the object smaller: fewer pixels differ from the background
    near, far = frames(both)[:, :, :48].astype(int), frames(wide).astype(int)
    assert (np.abs(far - 255).sum(-1) > 60).mean() < 0.5 * (np.abs(near - 255).sum(-1) > 60).mean()


def test_hash_grid_test_views(demo_run, tmp_path):
    out = tmp_path / "test.mp4"
    assert main(["render", str(demo_run), "--out", str(out), "--path", "test",
                 "--frames", "3"]) == 0
    assert frames(out).shape == (16, 48, 48, 3)  # every test view, at the run's 48 px


def test_bad_render_options(demo_splat_run, tmp_path, capsys):
    assert main(["render", str(demo_splat_run), "--out", str(tmp_path / "v.mp4"),
                 "--fov", "200"]) == 1
    assert "--fov must be between 0 and 180" in capsys.readouterr().err
    assert main(["render", str(demo_splat_run), "--out", str(tmp_path / "v.mp4"),
                 "--path", "zigzag"]) == 1
    assert "use orbit, spiral, interp, test" in capsys.readouterr().err


def test_a_run_whose_scene_is_gone_renders_from_its_saved_cameras(demo_splat_run, tmp_path,
                                                                  capsys):
    """A run keeps its training cameras (cameras.safetensors): orbit videos, points and the
    viewer's cameras work without the scene; only the test path needs its test cameras."""
    import json
    import shutil

    from fieldkit.export.render import camera_path

    run = tmp_path / "moved"
    shutil.copytree(demo_splat_run, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["scene"] = str(tmp_path / "gone")
    (run / "config.json").write_text(json.dumps(cfg))
    assert torch.allclose(camera_path(run, "orbit", 6, 64, None).c2w,
                          camera_path(demo_splat_run, "orbit", 6, 64, None).c2w)
    out = tmp_path / "orbit.mp4"
    assert main(["render", str(run), "--out", str(out), "--frames", "3", "--width", "32"]) == 0
    assert frames(out).shape == (3, 32, 32, 3)
    capsys.readouterr()
    assert main(["render", str(run), "--out", str(out), "--path", "test"]) == 1
    err = capsys.readouterr().err
    assert "--path test needs the test cameras" in err and err.count("\n") == 1
    from fieldkit.viewer.sources import Source

    assert torch.equal(Source.from_run(run).cameras.c2w,
                       Source.from_run(demo_splat_run).cameras.c2w)
