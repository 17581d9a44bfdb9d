"""A camera_path.json made in nerfstudio's viewer for splatfacto's Gaussians is in nerfstudio's
dataparser frame; `fieldkit render` of that run (or of a student distilled from it:
``test_splatfacto_run.py``) reads it there, not in the dataset's world the
Gaussians are brought back to."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from fieldkit.cli import main
from fieldkit.data.cameras import Cameras
from fieldkit.data.scene import load_cameras
from fieldkit.export.render import camera_path
from fieldkit.splats.nerfstudio_run import read_splatfacto_checkpoint
from fieldkit.splats.ply import write_splat_ply
from tests.conftest import DEMO_SCENE
from tests.distill.test_source import NS_SCALE, NS_SHIFT, _turn
from tests.distill.test_splatfacto_run import splatfacto_run  # noqa: F401 (a fixture)


def _test_cameras(n: int = 3) -> Cameras:
    """The first ``n`` test cameras of the demo at 1/2 size, in its world units."""
    cams, splits, norm = load_cameras(DEMO_SCENE, downscale=2)
    return cams[splits["test"][:n]].to_world(norm)


def _nerfstudio_file(path: Path, world: Cameras) -> Path:
    """``world`` as nerfstudio's viewer writes them: in the dataparser frame of
    ``splatfacto_run`` (``p = s (R p_world + t)``), OpenGL axes, vertical fov in degrees."""
    R, t, s = _turn(), NS_SHIFT, NS_SCALE
    frames = []
    for i in range(len(world)):
        c2w = world.c2w[i].double()
        m = torch.eye(4, dtype=torch.float64)
        m[:3, :3] = R @ c2w[:3, :3]
        m[:3, 3] = s * (R @ c2w[:3, 3] + t)
        m[:3, 1:3] *= -1                                      # OpenCV -> OpenGL axes
        fov = math.degrees(2 * math.atan(0.5 * float(world.height[i]) / float(world.K[i, 1, 1])))
        frames.append({"camera_to_world": m.reshape(-1).tolist(), "fov": fov, "aspect": 1.0})
    path.write_text(json.dumps({"camera_type": "perspective", "render_width":
                                int(world.width[0]), "render_height": int(world.height[0]),
                                "camera_path": frames}))
    return path


def _same_cameras(a: Cameras, b: Cameras) -> None:
    assert torch.allclose(a.c2w, b.c2w, atol=1e-4), (a.c2w - b.c2w).abs().max()
    assert torch.allclose(a.K, b.K, atol=1e-3)
    assert torch.equal(a.width, b.width) and torch.equal(a.height, b.height)


def test_a_splatfacto_runs_nerfstudio_path_is_in_nerfstudios_frame(splatfacto_run,  # noqa: F811
                                                                   tmp_path):
    path = _nerfstudio_file(tmp_path / "camera_path.json", _test_cameras())
    want = camera_path(splatfacto_run, "test", 0, None, None)[:3]
    _same_cameras(camera_path(splatfacto_run, str(path), 0, None, None), want)
    # ns-export's .ply with the run's transform: the same frame
    ply = write_splat_ply(tmp_path / "splat.ply", read_splatfacto_checkpoint(
        splatfacto_run / "nerfstudio_models" / "step-000002999.ckpt"))
    from fieldkit.export.subject import open_subject

    subject = open_subject(ply, ply_transform=splatfacto_run / "dataparser_transforms.json")
    _same_cameras(camera_path(subject, str(path), 0, None, None), want)
    # the whole command
    out = tmp_path / "path.gif"
    assert main(["render", str(splatfacto_run), "--path", str(path), "--out", str(out)]) == 0
    assert out.is_file()


def test_the_frame_takes_the_datasets_world_to_the_checkpoints(splatfacto_run):  # noqa: F811
    """The saved frame is the similarity that puts the Gaussians, back in the dataset's world,
    where the checkpoint holds them."""
    from fieldkit.data.normalize import Normalisation
    from fieldkit.distill.source import open_teacher

    source = open_teacher(splatfacto_run)
    frame = Normalisation.from_dict(source.config["nerfstudio_frame"])
    world = Normalisation.from_dict(source.config["normalisation"]).to_world(
        source.model.params["means"].detach().double())
    saved = read_splatfacto_checkpoint(splatfacto_run / "nerfstudio_models" /
                                       "step-000002999.ckpt")["means"].double()
    assert np.allclose(frame.to_box(world).numpy(), saved.numpy(), atol=1e-4)


def test_the_viewer_loads_a_nerfstudio_path_in_its_frame(splatfacto_run, demo_run,  # noqa: F811
                                                         tmp_path):
    """The path panel's load and upload: every camera of a nerfstudio path becomes a keyframe,
    where the viewer shows the run (its dataset's world); a model nerfstudio did not train
    refuses such a path in one line."""
    import pytest

    from fieldkit.errors import FieldkitError
    from fieldkit.viewer.keyframes import CameraPath
    from fieldkit.viewer.server import open_sources
    from fieldkit.viewer.sources import Source

    world = _test_cameras()
    data = json.loads(_nerfstudio_file(tmp_path / "camera_path.json", world).read_text())
    data.update(fps=24, seconds=2.5, is_cycle=True)
    (source,) = open_sources(splatfacto_run)
    path = CameraPath.from_json(data, "camera_path.json", source.from_nerfstudio)
    assert len(path.keyframes) == 3 and (path.fps, path.seconds, path.loop) == (24, 2.5, True)
    assert (path.width, path.height) == (int(world.width[0]), int(world.height[0]))
    for key, c2w, K in zip(path.keyframes, world.c2w, world.K):
        assert np.allclose(key.c2w, c2w.double().numpy(), atol=1e-4)
        assert math.isclose(key.fov, 2 * math.atan(0.5 * int(world.height[0]) / float(K[1, 1])),
                            rel_tol=1e-5)
    with pytest.raises(FieldkitError, match="not trained by nerfstudio") as e:
        CameraPath.from_json(data, "camera_path.json", Source.from_run(demo_run).from_nerfstudio)
    assert "\n" not in str(e.value)
