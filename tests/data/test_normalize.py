import numpy as np
import torch

from fieldkit.data.normalize import (Normalisation, auto_normalisation, look_at_point,
                                     rotation_between)


def _orbit(center, radius, up, n=24) -> np.ndarray:
    """OpenCV c2w of cameras on a tilted ring around ``center`` looking at it."""
    up = np.asarray(up, float) / np.linalg.norm(up)
    a = np.cross(up, [1.0, 0, 0]) if abs(up[0]) < 0.9 else np.cross(up, [0, 1.0, 0])
    a /= np.linalg.norm(a)
    b = np.cross(up, a)
    out = []
    for t in np.linspace(0, 2 * np.pi, n, endpoint=False):
        pos = center + radius * (np.cos(t) * a + np.sin(t) * b + 0.5 * up)
        z = (center - pos) / np.linalg.norm(center - pos)
        x = np.cross(z, up)
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        m = np.eye(4)
        m[:3, :3] = np.stack([x, y, z], 1)
        m[:3, 3] = pos
        out.append(m)
    return np.stack(out)


def test_round_trip_and_dict():
    n = Normalisation(0.3, rotation_between(np.array([1.0, 2, 3]), np.array([0, 0, 1.0])),
                      np.array([1.0, -2, 0.5]), 4.0)
    p = torch.randn(100, 3, dtype=torch.float64)
    assert torch.allclose(n.to_world(n.to_box(p)), p)
    assert np.allclose(n.matrix() @ n.inverse_matrix(), np.eye(4))
    back = Normalisation.from_dict(n.as_dict())
    assert np.allclose(back.matrix(), n.matrix()) and back.bound == 4.0


def test_rotation_between_including_opposite_vectors():
    for a, b in (([1.0, 2, 3], [0, 0, 1.0]), ([0, 0, -1.0], [0, 0, 1.0]), ([0, 1.0, 0], [0, 1.0, 0])):
        R = rotation_between(np.array(a), np.array(b))
        assert np.allclose(R @ R.T, np.eye(3)) and np.isclose(np.linalg.det(R), 1)
        assert np.allclose(R @ (np.array(a) / np.linalg.norm(a)), b)


def test_orbit_is_centred_oriented_and_scaled():
    center, up = np.array([5.0, -3.0, 2.0]), np.array([0.3, -1.0, 0.2])
    c2w = _orbit(center, 10.0, up)
    point, trusted = look_at_point(c2w)
    assert trusted and np.allclose(point, center, atol=1e-6)
    n = auto_normalisation(c2w)
    assert np.allclose(n.center, center, atol=1e-6)
    assert np.allclose(n.rotation @ (up / np.linalg.norm(up)), [0, 0, 1], atol=1e-6)
    distance = np.linalg.norm(c2w[0, :3, 3] - center)
    assert np.isclose(1 / n.scale, 0.375 * distance)
    assert n.bound == 4.0  # cameras sit at 1 / 0.375 = 2.67 box units


def test_forward_facing_capture_falls_back_to_points():
    c2w = np.stack([np.eye(4)] * 6)
    c2w[:, 0, 3] = np.linspace(-1, 1, 6)  # parallel optical axes: no look-at point
    rng = np.random.default_rng(0)
    points = rng.normal([0, 0, 8], [2, 1, 1], (500, 3))
    point, trusted = look_at_point(c2w)
    assert not trusted
    n = auto_normalisation(c2w, points)
    assert np.allclose(n.center, [0, 0, 8], atol=0.3)
    inside = (np.abs(n.to_box(torch.from_numpy(points)).numpy()) <= 1).all(1).mean()
    assert inside > 0.7
