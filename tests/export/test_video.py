"""Video writing (mp4 / gif round trips) and depth colouring."""
from __future__ import annotations

import imageio.v2 as iio
import numpy as np
import pytest
import torch

from fieldkit.errors import FieldkitError
from fieldkit.export.video import colorize_depth, to_uint8, turbo, write_video


def _frames(n: int, w: int, h: int) -> list[np.ndarray]:
    """Flat-colour frames with a brightness ramp over time."""
    out = []
    for i in range(n):
        colour = np.array([40 + 15 * i, 200 - 10 * i, 90], dtype=np.uint8)
        out.append(np.broadcast_to(colour, (h, w, 3)).copy())
    return out


@pytest.mark.parametrize("w, h", [(64, 48), (63, 47)])
def test_mp4_round_trip(tmp_path, w, h):
    frames = _frames(10, w, h)
    path = tmp_path / "out.mp4"
    write_video(path, iter(frames), fps=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no temp file left
    back = iio.mimread(path, memtest=False)
    assert len(back) == 10
    assert back[0].shape == (h + h % 2, w + w % 2, 3)  # odd sizes padded to even
    for got, want in zip(back, frames):
        diff = np.abs(got[:h, :w].reshape(-1, 3).mean(0) - want.reshape(-1, 3).mean(0))
        assert diff.max() < 10, diff


def test_float_frames_and_gif(tmp_path):
    frames = [torch.full((20, 30, 3), v) for v in (0.0, 0.5, 1.0)]
    path = tmp_path / "out.gif"
    write_video(path, frames, fps=5)
    back = iio.mimread(path)
    assert len(back) == 3 and back[0].shape[:2] == (20, 30)
    means = [f[..., :3].mean() for f in back]
    assert means == pytest.approx([0, 128, 255], abs=3)


def test_video_errors(tmp_path):
    with pytest.raises(FieldkitError, match="unknown extension '.avi2'"):
        write_video(tmp_path / "x.avi2", _frames(2, 8, 8))
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "x.mp4", [])
    with pytest.raises(ValueError, match="frame 1"):
        write_video(tmp_path / "x.mp4", [np.zeros((8, 8, 3), np.uint8),
                                         np.zeros((8, 10, 3), np.uint8)])
    assert list(tmp_path.iterdir()) == []


def test_to_uint8():
    img = torch.tensor([[[0.0, 0.5, 1.0], [-1.0, 2.0, float("nan")]]])
    out = to_uint8(img)
    assert out.dtype == np.uint8 and out.shape == (1, 2, 3)
    assert out.tolist() == [[[0, 128, 255], [0, 255, 0]]]
    assert to_uint8(out) is out
    assert to_uint8(np.full((2, 2, 3), 0.2, np.float64))[0, 0, 0] == 51


def test_turbo_endpoints():
    c = turbo(np.array([0.1, 0.5, 1.0]))
    assert c[0, 2] > 2 * c[0, 0]  # near: blue
    assert c[1, 1] > 0.9  # middle: green
    assert c[2, 0] > 0.4 and c[2, 0] > 5 * c[2, 2]  # far: red


def test_colorize_depth_ordering():
    depth = torch.linspace(1.0, 5.0, 64).reshape(8, 8)
    rgb = colorize_depth(depth)
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8
    flat = rgb.reshape(-1, 3).astype(int)
    assert not np.array_equal(flat[0], flat[-1])  # near and far differ
    # The colours decode back to a monotonic depth order (nearest entry of a fine ramp).
    ramp = colorize_depth(np.linspace(0, 1, 256)[None]).reshape(-1, 3).astype(int)
    decoded = [int(np.argmin(((ramp - c) ** 2).sum(1))) for c in flat]
    assert decoded == sorted(decoded) and decoded[-1] - decoded[0] > 200
    # Explicit near/far clip: everything beyond far looks like far.
    clipped = colorize_depth(depth, near=1.0, far=3.0)
    assert np.array_equal(clipped.reshape(-1, 3)[-1], clipped.reshape(-1, 3)[40])
    assert np.array_equal(colorize_depth(depth, near=1.0, far=5.0), rgb)


def test_colorize_depth_invalid_is_black():
    depth = np.full((4, 4), 2.0)
    depth[0, 0] = np.nan
    depth[0, 1] = np.inf
    depth[1, 1] = 3.0
    alpha = np.ones((4, 4))
    alpha[2] = 0.0
    alpha[3, 0] = 0.5
    rgb = colorize_depth(depth, alpha)
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, 1].tolist() == [0, 0, 0]
    assert (rgb[2] == 0).all()
    assert np.abs(rgb[3, 0].astype(int) - rgb[3, 1].astype(int) / 2).max() <= 1
    assert rgb[1, 1].tolist() != rgb[1, 0].tolist()
    assert colorize_depth(np.full((2, 2), np.nan)).max() == 0  # no valid depth at all
    flat = colorize_depth(np.full((2, 2), 3.0))  # one depth: uniform, not an error
    assert (flat == flat[0, 0]).all()
