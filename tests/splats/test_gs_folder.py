"""The original 3DGS trainer's output folder: cameras.json read and written, its .ply found."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fieldkit.data.cameras import Cameras
from fieldkit.errors import FieldkitError
from fieldkit.splats.gs_folder import (cameras_json_for, latest_ply, read_cameras_json,
                                       write_cameras_json)


def _inria_entry(i: int, R_w2c: np.ndarray, t: np.ndarray, w: int, h: int, fx: float,
                 fy: float, name: str) -> dict:
    """A cameras.json entry as 3DGS's ``camera_to_JSON`` makes it from a COLMAP world-to-camera
    pose (R_w2c, t): it inverts [R_w2c | t] and stores the inverse's rotation and translation."""
    Rt = np.eye(4)
    Rt[:3, :3], Rt[:3, 3] = R_w2c, t
    inv = np.linalg.inv(Rt)
    return {"id": i, "img_name": name, "width": w, "height": h, "position": inv[:3, 3].tolist(),
            "rotation": inv[:3, :3].tolist(), "fy": fy, "fx": fx}


def _rot(axis: np.ndarray, deg: float) -> np.ndarray:
    k = axis / np.linalg.norm(axis)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    a = np.radians(deg)
    return np.eye(3) + np.sin(a) * cross + (1 - np.cos(a)) * cross @ cross


def test_a_3dgs_cameras_json_projects_world_points_where_colmap_does(tmp_path):
    """A point seen by a COLMAP camera (x_cam = R p + t, pixel = K x_cam) lands on the same
    pixel through the camera read back from the cameras.json 3DGS writes for it."""
    g = np.random.default_rng(0)
    entries, expected = [], []
    points = g.normal(size=(20, 3))
    for i, name in enumerate(["IMG_0003.JPG", "IMG_0001.JPG", "IMG_0002.JPG"]):
        R = _rot(g.normal(size=3), g.uniform(10, 170))
        t = np.array([0.1 * i, -0.2, 6.0])            # the points lie in front of every camera
        w, h, fx, fy = 640 + 2 * i, 480, 500.0 + i, 510.0
        entries.append(_inria_entry(i, R, t, w, h, fx, fy, name))
        cam = points @ R.T + t
        expected.append((name, np.stack([fx * cam[:, 0] / cam[:, 2] + w / 2,
                                         fy * cam[:, 1] / cam[:, 2] + h / 2], -1)))
    path = tmp_path / "cameras.json"
    path.write_text(json.dumps(entries))
    cams = read_cameras_json(path)
    assert cams["names"] == ["IMG_0001.JPG", "IMG_0002.JPG", "IMG_0003.JPG"]  # shooting order
    world = Cameras(torch.from_numpy(cams["c2w"]), torch.from_numpy(cams["K"]),
                    torch.from_numpy(cams["width"]), torch.from_numpy(cams["height"]))
    for k, (name, xy) in enumerate(sorted(expected)):
        got, z = world.project(torch.full((20,), k), torch.from_numpy(points))
        assert (z > 0).all()
        assert np.abs(got.numpy() - xy).max() < 1e-6, name


def test_cameras_json_round_trip(tmp_path):
    g = np.random.default_rng(1)
    n = 5
    c2w = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        c2w[i, :3, :3] = _rot(g.normal(size=3), g.uniform(0, 180))
        c2w[i, :3, 3] = g.normal(size=3) * 3
    w, h = np.array([100, 120, 80, 64, 64]), np.array([50, 90, 80, 48, 64])
    K = np.zeros((n, 3, 3))
    K[:, 0, 0], K[:, 1, 1], K[:, 2, 2] = g.uniform(50, 90, n), g.uniform(50, 90, n), 1
    K[:, 0, 2], K[:, 1, 2] = w / 2, h / 2
    write_cameras_json(tmp_path / "cameras.json", c2w, K, w, h)
    back = read_cameras_json(tmp_path / "cameras.json")
    assert np.allclose(back["c2w"], c2w, atol=1e-12) and np.allclose(back["K"], K)
    assert (back["width"] == w).all() and (back["height"] == h).all()


def test_the_latest_ply_and_its_cameras_are_found(tmp_path):
    model = tmp_path / "garden"
    for n in (7000, 30000, 900):
        (model / "point_cloud" / f"iteration_{n}").mkdir(parents=True)
        (model / "point_cloud" / f"iteration_{n}" / "point_cloud.ply").write_bytes(b"ply\n")
    (model / "point_cloud" / "iteration_40000").mkdir()         # no .ply in it: skipped
    assert latest_ply(model) == model / "point_cloud" / "iteration_30000" / "point_cloud.ply"
    assert latest_ply(tmp_path) is None
    assert cameras_json_for(latest_ply(model)) is None
    (model / "cameras.json").write_text("[]")
    assert cameras_json_for(latest_ply(model)) == (model / "cameras.json").resolve()
    beside = tmp_path / "loose"
    beside.mkdir()
    (beside / "cameras.json").write_text("[]")
    assert cameras_json_for(beside / "scene.ply") == (beside / "cameras.json").resolve()


GOOD = {"id": 0, "img_name": "a", "width": 64, "height": 48, "position": [0, 0, 0],
        "rotation": np.eye(3).tolist(), "fx": 50, "fy": 50}


@pytest.mark.parametrize("content,needle", [
    ("not json", "could not be read as JSON"),
    ("[]", "is not a list of cameras"),
    ('{"cameras": []}', "is not a list of cameras"),
    (json.dumps([{**GOOD, "rotation": None}]), "'rotation' 3x3"),
    (json.dumps([GOOD, {**GOOD, "rotation": (2 * np.eye(3)).tolist()}]),
     "camera 1: 'rotation' is not a rotation matrix"),
    (json.dumps([{**GOOD, "rotation": (-np.eye(3)).tolist()}]), "not a rotation matrix"),
    (json.dumps([{**GOOD, "fx": 0}]), "focal lengths"),
    (json.dumps([{**GOOD, "fy": "50"}]), "'fy' is '50'"),
    (json.dumps([{**GOOD, "width": 64.5}]), "image size"),
    (json.dumps([{**GOOD, "position": [0, 0]}]), "'position' must be 3 numbers"),
    (json.dumps([GOOD, 3]), "camera 1: is not an object"),
])
def test_a_malformed_cameras_json_is_a_one_line_error(tmp_path, content, needle):
    path = tmp_path / "cameras.json"
    path.write_text(content)
    with pytest.raises(FieldkitError) as e:
        read_cameras_json(path)
    assert needle in str(e.value) and "\n" not in str(e.value) and str(path) in str(e.value)


def test_cfg_args_are_read_as_literals_never_run(tmp_path):
    from fieldkit.splats.gs_folder import read_cfg_args, write_cfg_args

    path = tmp_path / "cfg_args"
    path.write_text("Namespace(data_device='cuda', eval=True, images='images', model_path="
                    "'./output/a,b', resolution=-1, sh_degree=3, source_path='/data/gar(den)', "
                    "white_background=False, hook=__import__('os').remove('x'))")
    args = read_cfg_args(path)
    assert args["source_path"] == "/data/gar(den)" and args["model_path"] == "./output/a,b"
    assert args["resolution"] == -1 and args["eval"] is True and "hook" not in args
    write_cfg_args(path, "/data/lego", "out/lego", 3, resolution=4, white_background=True)
    back = read_cfg_args(path)
    assert back["source_path"] == "/data/lego" and back["resolution"] == 4
    assert back["white_background"] is True and back["sh_degree"] == 3
    path.write_text("not a namespace")
    assert read_cfg_args(path) == {} and read_cfg_args(tmp_path / "missing") == {}
