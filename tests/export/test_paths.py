"""Camera paths: orbit geometry, spiral, intrinsics scaling and JSON camera paths."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fieldkit.data.cameras import Cameras
from fieldkit.errors import FieldkitError
from fieldkit.export.paths import load_path_json, look_at, orbit_path, spiral_path


def _ring(n=12, radius=4.0, elevation_deg=30.0, center=(0.2, -0.1, 0.3), w=80, h=60) -> Cameras:
    """Inward-facing cameras on a ring, looking at ``center``."""
    c = np.asarray(center, dtype=np.float64)
    el = math.radians(elevation_deg)
    c2w = []
    for k in range(n):
        az = 0.3 + 2 * math.pi * k / n
        p = c + radius * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az),
                                   math.sin(el)])
        c2w.append(look_at(p, c))
    K = torch.tensor([[70.0, 0, 40.0], [0, 72.0, 30.0], [0, 0, 1]]).expand(n, 3, 3)
    return Cameras(torch.tensor(np.stack(c2w), dtype=torch.float32), K.clone(),
                   torch.full((n,), w), torch.full((n,), h))


def _forward_facing(n=9) -> Cameras:
    """A 3x3 grid of parallel cameras looking along +y with world up +z."""
    c2w = []
    for i in range(n):
        m = np.eye(4)
        m[:3, :3] = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # x right, y down=-z, z=+y
        m[:3, 3] = [0.1 * (i % 3 - 1), -3.0, 0.1 * (i // 3 - 1)]
        c2w.append(m)
    K = torch.tensor([[50.0, 0, 32], [0, 50, 24], [0, 0, 1]]).expand(n, 3, 3)
    return Cameras(torch.tensor(np.stack(c2w), dtype=torch.float32), K.clone(),
                   torch.full((n,), 64), torch.full((n,), 48))


def _check_rotations(cams: Cameras) -> None:
    R = cams.c2w[:, :3, :3].double()
    eye = torch.eye(3, dtype=torch.float64).expand_as(R)
    assert torch.allclose(R.transpose(1, 2) @ R, eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(len(cams), dtype=torch.float64),
                          atol=1e-5)
    assert torch.equal(cams.c2w[:, 3], torch.tensor([0.0, 0, 0, 1]).expand(len(cams), 4))


def _axis_distance(cams: Cameras, point: np.ndarray) -> np.ndarray:
    """[N] distance of ``point`` from each camera's optical axis."""
    c2w = cams.c2w.double().numpy()
    o, d = c2w[:, :3, 3], c2w[:, :3, 2]
    v = point - o
    return np.linalg.norm(v - (v * d).sum(1, keepdims=True) * d, axis=1)


def test_orbit_geometry():
    center = np.array([0.2, -0.1, 0.3])
    cams = orbit_path(_ring(center=center), 36)
    assert len(cams) == 36 and cams.distortion is None
    _check_rotations(cams)
    assert _axis_distance(cams, center).max() < 1e-5
    c2w = cams.c2w.double().numpy()
    assert ((center - c2w[:, :3, 3]) * c2w[:, :3, 2]).sum(1).min() > 0  # centre in front
    dist = np.linalg.norm(c2w[:, :3, 3] - center, axis=1)
    assert np.allclose(dist, 4.0, atol=1e-5)
    elev = np.degrees(np.arcsin((c2w[:, 2, 3] - center[2]) / dist))
    assert np.allclose(elev, 30.0, atol=1e-3)
    assert (c2w[:, 2, 1] < 0).all()  # image y (down) points down in the world
    assert (c2w[:, 2, 0] == pytest.approx(0.0, abs=1e-6))  # image x stays horizontal
    # Consecutive frames, and last -> first, are 360/n degrees apart around the centre.
    az = np.degrees(np.arctan2(c2w[:, 1, 3] - center[1], c2w[:, 0, 3] - center[0]))
    steps = np.diff(np.concatenate([az, az[:1]])) % 360
    assert np.allclose(steps, 10.0, atol=1e-3)
    assert not np.allclose(c2w[0], c2w[-1], atol=1e-3)


def test_orbit_explicit_elevation_and_radius():
    cams = orbit_path(_ring(center=(0, 0, 0)), 8, elevation_deg=-20.0, radius=2.5)
    c2w = cams.c2w.double().numpy()
    dist = np.linalg.norm(c2w[:, :3, 3], axis=1)
    assert np.allclose(dist, 2.5, atol=1e-5)
    assert np.allclose(np.degrees(np.arcsin(c2w[:, 2, 3] / dist)), -20.0, atol=1e-3)
    assert (c2w[:, 2, 1] < 0).all()
    assert _axis_distance(cams, np.zeros(3)).max() < 1e-5


def test_orbit_falls_back_to_origin():
    cams = orbit_path(_forward_facing(), 10)  # parallel axes: no look-at point
    assert _axis_distance(cams, np.zeros(3)).max() < 1e-5
    _check_rotations(cams)


def test_resizing_scales_K():
    ring = _ring(w=80, h=60)
    same = orbit_path(ring, 4)
    assert torch.equal(same.K[0], ring.K[0]) and int(same.width[0]) == 80
    half = orbit_path(ring, 4, width=40, height=30)
    assert torch.allclose(half.K[0], torch.tensor([[35.0, 0, 20], [0, 36, 15], [0, 0, 1]]))
    assert half.width.tolist() == [40] * 4 and half.height.tolist() == [30] * 4
    wide = spiral_path(ring, 4, width=160)  # one side keeps the aspect ratio
    assert int(wide.height[0]) == 120
    assert torch.allclose(wide.K[0], ring.K[0] * torch.tensor([[2.0], [2.0], [1.0]]))


def test_spiral_forward_facing():
    ff = _forward_facing()
    cams = spiral_path(ff, 60, n_rotations=2.0)
    assert len(cams) == 60
    _check_rotations(cams)
    c2w = cams.c2w.double().numpy()
    pos = c2w[:, :3, 3]
    mean = ff.positions.double().numpy().mean(0)
    offsets = pos - mean
    assert np.abs(offsets[:, [0, 2]]).max() == pytest.approx(0.1, rel=0.05)  # 90th pct radius
    assert offsets[:, 1].max() == pytest.approx(0.025, rel=1e-3)  # in and out along +y
    assert offsets[:, 1].min() == pytest.approx(-0.025, rel=1e-3)
    assert (c2w[:, 1, 2] > 0.9).all()  # still looking along +y
    assert (c2w[:, 2, 1] < 0).all()  # image down is world down
    # All frames look at one focus point ahead (the origin for this capture).
    assert _axis_distance(cams, np.array([mean[0], 0.0, mean[2]])).max() < 1e-5
    assert not np.allclose(pos[0], pos[15])


def test_spiral_moves_in_and_out():
    ring = _ring()  # cameras spread in depth around their mean pose
    cams = spiral_path(ring, 40)
    c2w = cams.c2w.double().numpy()
    pos = c2w[:, :3, 3]
    mean = ring.positions.double().numpy().mean(0)
    forward = ring.c2w[:, :3, 2].double().numpy().mean(0)
    depth = (pos - mean) @ (forward / np.linalg.norm(forward))
    assert depth.max() > 1e-3 and depth.min() < -1e-3


def test_load_fieldkit_json(tmp_path):
    ring = _ring(w=80, h=60)
    path = tmp_path / "path.json"
    m = look_at(np.array([0.0, -3.0, 1.0]), np.zeros(3))
    frames = [{"c2w": m.tolist()},
              {"c2w": m[:3].tolist(), "fx": 100.0, "cx": 50.0, "width": 100, "height": 50}]
    path.write_text(json.dumps(frames))
    cams = load_path_json(path, ring)
    assert len(cams) == 2 and cams.distortion is None
    assert torch.allclose(cams.c2w[0].double(), torch.tensor(m), atol=1e-6)
    assert torch.equal(cams.K[0], ring.K[0])
    assert cams.width.tolist() == [80, 100] and cams.height.tolist() == [60, 50]
    # frame 1: fx/fy from the file, cx given, cy scaled from the default camera.
    assert torch.allclose(cams.K[1], torch.tensor([[100.0, 0, 50], [0, 100, 25], [0, 0, 1]]))
    small = load_path_json(path, ring, width=50)
    assert small.width.tolist() == [50, 50] and small.height.tolist() == [38, 25]
    assert float(small.K[1, 0, 0]) == pytest.approx(50.0)
    path.write_text(json.dumps({"frames": frames}))
    assert len(load_path_json(path, ring)) == 2


def test_load_nerfstudio_json(tmp_path):
    ring = _ring()
    gl = look_at(np.array([0.0, -3.0, 1.0]), np.zeros(3))
    gl[:3, 1:3] *= -1  # OpenCV -> OpenGL axes, as nerfstudio writes them
    data = {"render_width": 64, "render_height": 32, "camera_type": "perspective",
            "camera_path": [{"camera_to_world": gl.reshape(-1).tolist(), "fov": 90.0,
                             "aspect": 2.0}] * 3}
    path = tmp_path / "camera_path.json"
    path.write_text(json.dumps(data))
    cams = load_path_json(path, ring)
    assert len(cams) == 3
    assert cams.width.tolist() == [64] * 3 and cams.height.tolist() == [32] * 3
    assert torch.allclose(cams.K[0], torch.tensor([[16.0, 0, 32], [0, 16, 16], [0, 0, 1]]))
    assert _axis_distance(cams, np.zeros(3)).max() < 1e-5
    assert float(cams.c2w[0, 2, 1]) < 0  # y down again
    big = load_path_json(path, ring, height=64)
    assert big.width.tolist()[0] == 128 and float(big.K[0, 1, 1]) == pytest.approx(32.0)


@pytest.mark.parametrize("text, needle", [
    ("{not json", "not valid JSON"),
    ("[]", "non-empty"),
    ('{"something": 1}', "non-empty"),
    ('[{"fx": 1}]', "'c2w'"),
    ('[{"c2w": [[1, 0], [0, 1]]}]', "shape"),
    ('[{"c2w": [[1,0,0,0],[0,1,0,0],[0,0,-1,0],[0,0,0,1]]}]', "reflection"),
    ('[{"c2w": [[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]], "fx": "wide"}]', "expected a number"),
    ('{"camera_path": [{"camera_to_world": [1, 2, 3]}]}', "16"),
    ('{"camera_path": [{"fov": 50}]}', "camera_to_world"),
    ('{"camera_type": "fisheye", "camera_path": [{"camera_to_world": '
     '[1,0,0,0,0,1,0,0,0,0,1,0,0,0,0,1]}]}', "not supported"),
])
def test_malformed_json(tmp_path, text, needle):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(FieldkitError) as info:
        load_path_json(path, _ring())
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and needle in msg, msg


def test_missing_json(tmp_path):
    with pytest.raises(FieldkitError, match="does not exist"):
        load_path_json(tmp_path / "nope.json", _ring())


# ---------------------------------------------------------------------- interpolation
def test_interpolated_path_loops_through_keyframes_smoothly():
    from fieldkit.export.interp import interpolated_path

    ring = _ring(n=12)
    perm = torch.tensor([5, 0, 9, 2, 11, 7, 1, 4, 10, 3, 8, 6])  # dataset order is no path order
    shuffled = Cameras(ring.c2w[perm], ring.K[perm], ring.width[perm], ring.height[perm])
    cams = interpolated_path(shuffled, 96, keyframes=6, width=40)
    assert len(cams) == 96 and int(cams.width[0]) == 40 and int(cams.height[0]) == 30
    _check_rotations(cams)
    pos = cams.positions.double().numpy()
    ring_pos = ring.positions.double().numpy()
    # every 16th frame is a keyframe: exactly a training camera, pose included
    for f in range(0, 96, 16):
        d = np.linalg.norm(ring_pos - pos[f], axis=1)
        assert d.min() < 1e-5
        j = int(d.argmin())
        assert torch.allclose(cams.c2w[f, :3, :3], ring.c2w[j, :3, :3], atol=1e-5)
    # smooth and looping: steps are even (no jumps), the last frame leads back to the first
    steps = np.linalg.norm(np.diff(np.vstack([pos, pos[:1]]), axis=0), axis=1)
    assert steps.max() < 1.6 * np.median(steps)
    # the cameras keep looking at the object (the ring's centre)
    assert _axis_distance(cams, np.array([0.2, -0.1, 0.3])).max() < 0.3


def test_interpolated_path_sweeps_a_forward_facing_capture():
    from fieldkit.export.interp import interpolated_path

    cams = interpolated_path(_forward_facing(), 30, keyframes=4)
    _check_rotations(cams)
    pos = cams.positions.double().numpy()
    grid = _forward_facing().positions.double().numpy()
    for end in (pos[0], pos[-1]):  # starts and ends on capture cameras, no loop back
        assert np.linalg.norm(grid - end, axis=1).min() < 1e-5
    assert np.linalg.norm(pos[0] - pos[-1]) > 0.1
    assert torch.allclose(cams.c2w[:, :3, 2], torch.tensor([0.0, 1, 0]).expand(30, 3), atol=1e-5)
