"""Viewer pieces without a browser: camera conversion, strips, path files, crop, budget, token,
and the command line without viser."""
from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch

from fieldkit.export.paths import load_path_json, look_at
from fieldkit.viewer.camera import (ViewCamera, cameras_to_view, render_size, sub_camera,
                                    view_to_cameras)
from fieldkit.render.crop import CropBox, CroppedField, crop_splat_params
from fieldkit.viewer.keyframes import CameraPath, Keyframe


def _view(pos=(3.0, -2.0, 1.5), target=(0.1, 0.2, -0.1), fov=0.8, aspect=1.5) -> ViewCamera:
    return ViewCamera.from_c2w(look_at(np.array(pos), np.array(target)), fov, aspect)


def test_viser_convention_looks_along_plus_z():
    """viser's wxyz/position are R, t of p_world = R p_cam + t with OpenCV axes: a point the
    camera looks at projects to the image centre, and world up is up in the image."""
    v = _view()
    cams = view_to_cameras(v, 200)
    assert (int(cams.width[0]), int(cams.height[0])) == (200, 133)
    px, z = cams.project(torch.tensor([0]), torch.tensor([[0.1, 0.2, -0.1]]))
    assert z[0] > 0
    assert torch.allclose(px[0], torch.tensor([100.0, 66.5]), atol=1e-3)
    above, _ = cams.project(torch.tensor([0]), torch.tensor([[0.1, 0.2, 0.4]]))
    assert above[0, 1] < px[0, 1]          # +z (scene up) is higher in the image (smaller y)
    assert np.allclose(v.look_direction(), v.c2w()[:3, 2])
    assert v.up_direction() @ np.array([0, 0, 1]) > 0


def test_view_cameras_round_trip():
    v = _view(fov=0.7, aspect=0.75)
    cams = view_to_cameras(v, 300)
    assert (int(cams.width[0]), int(cams.height[0])) == (225, 300)
    back = cameras_to_view(cams)
    assert np.allclose(back.c2w(), v.c2w(), atol=1e-6)
    assert math.isclose(back.fov, v.fov, rel_tol=1e-6)
    assert math.isclose(back.aspect, v.aspect, rel_tol=1e-6)
    assert np.allclose(np.abs(back.wxyz), np.abs(v.wxyz), atol=1e-6)
    assert render_size(2.0, 128) == (128, 64) and render_size(0.5, 128) == (64, 128)


def test_sub_camera_rays_are_the_full_image_rays():
    cams = view_to_cameras(_view(), 64)
    o, d = cams.image_rays(0)
    part = sub_camera(cams, 10, 5, 20, 7)
    po, pd = part.image_rays(0)
    assert torch.allclose(pd, d[5:12, 10:30], atol=1e-6)
    assert torch.allclose(po, o[5:12, 10:30])


def test_frame_strips_and_split_equal_whole_renders():
    from fieldkit.viewer.frame import FrameJob, FrameSettings

    class Fake:  # colour = ray direction, so any misplaced pixel shows
        def render(self, camera, background, crop=None, step_scale=1.0):
            o, d = camera.image_rays(0)
            return {"rgb": d * 0.5 + 0.5, "depth": d[..., :1], "alpha": torch.ones_like(d[..., :1])}

    cam = view_to_cameras(_view(), 48)
    whole = Fake().render(cam, None)["rgb"].numpy()
    job = FrameJob([Fake()], cam, FrameSettings(), key=1, strip_pixels=48 * 5)
    assert job.total > 3
    while not job.done:
        job.run_piece()
    assert np.allclose(job.rgb, whole, atol=1e-6)
    two = FrameJob([Fake(), Fake()], cam, FrameSettings(layout="split", split=0.3), key=2)
    while not two.done:
        two.run_piece()
    assert np.allclose(two.rgb, whole, atol=1e-6)    # each side renders its own columns
    img = two.image()
    assert (img[:, round(0.3 * 48) - 1] == (255, 64, 0)).all()


def test_view_depth_is_along_the_view_axis_and_far_where_empty():
    """The depth sent with a frame (viser hides the scene's objects behind it) is the view z
    of the rendered surface: a plane at view z = 2 drawn by rays of length 2 / cos."""
    from fieldkit.viewer.frame import FAR_DEPTH, FrameJob, FrameSettings

    class Plane:  # a wall at view z = 2 on the left half of the picture, nothing on the right
        def render(self, camera, background, crop=None, step_scale=1.0):
            o, d = camera.image_rays(0)
            fwd = torch.as_tensor(camera.c2w[0, :3, 2])
            t = 2.0 / (d @ fwd)[..., None]
            x = camera.pixel_centers(0)[..., :1] + camera.K[0, 0, 2] - 24   # frame column
            return {"rgb": torch.zeros_like(d), "depth": t, "alpha": (x < 24).float()}

    cam = view_to_cameras(_view(), 48)
    job = FrameJob([Plane()], cam, FrameSettings(), key=1, strip_pixels=48 * 8)
    job.run_piece()   # the first strip: the rest comes from the previous frame's depth
    base = np.full((job.height, 48, 1), 7.0, np.float32)
    part = job.view_depth(base)
    rows = int(job.done_mask[:, 0].sum())
    assert 0 < rows < job.height and np.allclose(part[rows:], 7.0)
    assert np.allclose(part[:rows, :24], 2.0, atol=1e-4) and np.allclose(part[:rows, 24:],
                                                                          FAR_DEPTH)
    while not job.done:
        job.run_piece()
    depth = job.view_depth()
    assert depth.shape == (job.height, 48, 1) and depth.dtype == np.float32
    assert np.allclose(depth[:, :24], 2.0, atol=1e-4)   # ray lengths reach 2.1 at the edges
    assert float(job.depth[:, :24].max()) > 2.05
    assert np.allclose(depth[:, 24:], FAR_DEPTH)


def test_camera_path_json_round_trip(tmp_path):
    keys = [Keyframe(look_at(np.array(p), np.zeros(3)), f) for p, f in
            (((3, 0, 1), 0.8), ((0, 3, 1.2), 0.7), ((-3, 0, 1), 0.9))]
    path = CameraPath(keys, seconds=2.0, fps=10, width=64, height=48)
    out = path.save(tmp_path / "p.json")
    # `fieldkit render --path p.json` reads one camera per frame
    default = view_to_cameras(_view(), 32)
    cams = load_path_json(out, default)
    assert len(cams) == 20 and int(cams.width[0]) == 64 and int(cams.height[0]) == 48
    assert np.allclose(cams.c2w[0].numpy(), keys[0].c2w, atol=1e-6)
    assert np.allclose(cams.c2w[-1].numpy(), keys[-1].c2w, atol=1e-6)
    assert math.isclose(float(cams.K[0, 1, 1]), 0.5 * 48 / math.tan(0.4), rel_tol=1e-5)
    mine = path.cameras()
    assert torch.allclose(cams.c2w, mine.c2w, atol=1e-6) and torch.allclose(cams.K, mine.K)
    # the viewer loads its keyframes back
    back = CameraPath.load(out)
    assert len(back.keyframes) == 3 and (back.fps, back.seconds) == (10, 2.0)
    for a, b in zip(back.keyframes, keys):
        assert np.allclose(a.c2w, b.c2w) and math.isclose(a.fov, b.fov)
    # a plain fieldkit frame list: every frame becomes a keyframe
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps([{"c2w": k.c2w.tolist()} for k in keys]))
    assert len(CameraPath.load(plain).keyframes) == 3


def test_camera_path_errors_are_one_line(tmp_path):
    from fieldkit.errors import FieldkitError

    bad = tmp_path / "bad.json"
    bad.write_text('{"frames": [{"no": 1}]}')
    with pytest.raises(FieldkitError, match="not a fieldkit camera path"):
        CameraPath.load(bad)
    nerfstudio = tmp_path / "camera_path.json"
    nerfstudio.write_text('{"camera_path": [{"camera_to_world": [1,0,0,0,0,1,0,0,0,0,1,0,0,0,0,1],'
                          ' "fov": 50}], "render_width": 64, "render_height": 48}')
    with pytest.raises(FieldkitError, match="nerfstudio camera path.*fieldkit render") as e:
        CameraPath.load(nerfstudio)
    assert "\n" not in str(e.value)
    with pytest.raises(FieldkitError, match="no keyframes"):
        CameraPath().interpolate()


def test_crop_box_empties_density_and_filters_splats():
    class Field(torch.nn.Module):
        def density(self, p):
            return torch.ones(len(p))

        def forward(self, p, d):
            return torch.ones(len(p), 3), torch.ones(len(p))

    box = CropBox((-0.5, -0.5, -0.5), (0.5, 0.5, 0.5))
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.0, 0.0], [0.4, -0.4, 0.49]])
    f = CroppedField(Field(), box)
    assert f.density(pts).tolist() == [1.0, 0.0, 1.0]
    assert f(pts, pts)[1].tolist() == [1.0, 0.0, 1.0]
    params = {"means": pts, "opacities": torch.tensor([1.0, 2.0, 3.0])}
    assert crop_splat_params(params, box)["opacities"].tolist() == [1.0, 3.0]


def test_render_budget_caps_the_share():
    """Rendering gets at most `fraction` of the training time (plus the burst and one strip),
    however long the steps or the strips take."""
    from fieldkit.viewer.scheduler import RenderBudget

    b = RenderBudget(0.15, burst=0.05)
    trained = 0.0
    for step in range(200):
        dt = 0.01 if step % 3 else 0.03            # uneven steps
        trained += dt
        b.earn(dt)
        while b.available() > 0:
            b.charge(0.004 if step % 5 else 0.02)  # strips, some longer than the credit
    assert 0.15 * trained - 0.05 <= b.total <= 0.15 * trained + 0.02
    b.earn(10.0)                                    # idle credit is capped by the burst
    assert b.available() == pytest.approx(0.05)


def test_token_check():
    from fieldkit.viewer.auth import cookie_name, request_token_ok

    assert request_token_ok("abc", "/?token=abc", None) == (True, True)
    assert request_token_ok("abc", "/?token=abd", None) == (False, False)
    assert request_token_ok("abc", "/", None) == (False, False)
    assert request_token_ok("abc", "/", f"x=1; {cookie_name('abc')}=abc") == (True, False)
    assert request_token_ok("abc", "/", f"{cookie_name('abc')}=nope") == (False, False)


def test_view_without_viser_says_how_to_install(monkeypatch, capsys, tmp_path):
    from fieldkit.cli import main

    monkeypatch.setitem(sys.modules, "viser", None)   # import viser -> ImportError
    assert main(["view", str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'fieldkit[viewer]'" in err[0]


def test_view_bad_target_is_one_line(capsys, tmp_path):
    pytest.importorskip("viser")
    from fieldkit.cli import main

    assert main(["view", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"not a ply")
    assert main(["view", str(bad)]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_frame_begun_before_the_browser_takes_over_is_not_sent(tmp_path, monkeypatch):
    """A server frame under way when the browser starts drawing the splats itself must not
    arrive after that: its image and depth would cover the browser's splats (seen on fox: the
    view opened on a stale frame of the wall)."""
    from fieldkit.viewer.config import ViewerConfig
    from fieldkit.viewer.frame import FrameJob
    from fieldkit.viewer.scheduler import ClientView, Renderer
    from fieldkit.viewer.sources import Source
    from tests.viewer.test_sources import _ply

    source = Source.from_ply(_ply(tmp_path, fog=100))
    sent = []
    view = ClientView(1, lambda img, depth: sent.append(img), preview_resolution=32)
    view.set_camera(_view(pos=source.home_pose()[0], target=source.home_pose()[1]))
    renderer = Renderer([source], ViewerConfig(port=0))
    renderer.add(view)
    assert renderer.work() > 0 and len(sent) == 1        # a server frame, as usual

    run_piece = FrameJob.run_piece

    def browser_takes_over(job):                          # during the next frame's render
        view.server_render = False
        return run_piece(job)

    view.touch()
    monkeypatch.setattr(FrameJob, "run_piece", browser_takes_over)
    renderer.work()
    assert len(sent) == 1 and view.job is None
    assert renderer.work() == 0.0                         # and nothing more is planned


def test_frustums_near_the_eye_hide_and_dense_captures_get_small_ones():
    """A dense capture's frustums are sized by the cameras' spacing, and those within NEAR_EYE
    sizes of the eye hide while it is there (they would cover the view); the "training
    cameras" box still hides or shows them all."""
    from types import SimpleNamespace

    from fieldkit.data.cameras import Cameras
    from fieldkit.viewer.scene_nodes import NEAR_EYE, Frustums, frustum_scale

    angles = np.radians(np.arange(0, 90, 3.0))            # 30 cameras on a 90 degree arc
    pos = 3 * np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], -1)
    c2w = torch.as_tensor(np.stack([look_at(p, np.zeros(3)) for p in pos]), dtype=torch.float32)
    K = torch.tensor([[50.0, 0, 32], [0, 50, 24], [0, 0, 1]]).expand(30, 3, 3)
    cams = Cameras(c2w, K, torch.full((30,), 64), torch.full((30,), 48))
    source = SimpleNamespace(cameras=cams, look_at=lambda: np.zeros(3))
    spacing = 3 * np.radians(3.0)                         # ~0.157 between neighbours
    scale = frustum_scale(source)
    assert scale == pytest.approx(0.5 * spacing, rel=0.01)   # not 0.1 x 3 = 0.3
    handles = [SimpleNamespace(visible=True) for _ in range(30)]
    frustums = Frustums(handles, pos, scale)
    frustums.update(eye=pos[10])
    hidden = [i for i, h in enumerate(handles) if not h.visible]
    assert hidden == list(range(10 - 2, 10 + 3))          # itself and two neighbours a side
    assert all(np.linalg.norm(pos[i] - pos[10]) < NEAR_EYE * scale for i in hidden)
    frustums.update(eye=np.array([0.0, 0.0, 30.0]))       # far above: all of them
    assert all(h.visible for h in handles)
    frustums.update(shown=False)
    assert not any(h.visible for h in handles)
    frustums.update(shown=True, eye=pos[0])
    assert [i for i, h in enumerate(handles) if not h.visible] == [0, 1, 2]
