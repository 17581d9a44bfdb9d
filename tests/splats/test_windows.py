"""Training windows of splat steps (``SplatConfig.step_pixels``): where they fall and what they
weigh."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from fieldkit.data.cameras import Cameras
from fieldkit.splats.trainer import (MIN_PATCH, SplatTrainer, axis_cell, axis_cells,
                                     window_grid)


def _trainer(step_pixels: int) -> SplatTrainer:
    trainer = object.__new__(SplatTrainer)
    trainer.model = SimpleNamespace(config=SimpleNamespace(step_pixels=step_pixels))
    return trainer


def _camera(width: int, height: int) -> Cameras:
    K = torch.tensor([[[100.0, 0, width / 2], [0, 100.0, height / 2], [0, 0, 1]]])
    return Cameras(torch.eye(4)[None], K, torch.tensor([width]), torch.tensor([height]))


@pytest.mark.parametrize("step_pixels", [16200, 8100, 3600])   # 2, 4 and 9 windows a view
def test_windows_draw_every_pixel_as_often(step_pixels):
    # Windows kept inside the view would draw its edge pixels 1/(W - w + 1) as often as its
    # middle (1/68 at half of fox's 135 columns); cells of a jittered grid draw all alike.
    torch.manual_seed(0)
    W, H = 135, 240
    trainer, cam = _trainer(step_pixels), _camera(W, H)
    kx, ky = window_grid(W, H, step_pixels)
    assert kx * ky == {16200: 2, 8100: 4, 3600: 9}[step_pixels]
    counts = torch.zeros(H, W)
    weights = torch.zeros(H, W)
    for _ in range(3000):
        win_cam, (rows, cols), share = trainer.window(cam, H, W)
        ww, hh = cols.stop - cols.start, rows.stop - rows.start
        assert (int(win_cam.width[0]), int(win_cam.height[0])) == (ww, hh)
        assert W / kx / 2 - 1 <= ww <= 1.5 * W / kx + 1 and H / ky / 2 - 1 <= hh <= 1.5 * H / ky + 1
        assert share == pytest.approx(ww * hh * kx * ky / (W * H))
        # the window's camera sees its pixels where the view's camera sees them
        assert torch.allclose(win_cam.K[0, :2, 2], cam.K[0, :2, 2] - torch.tensor(
            [cols.start, rows.start], dtype=torch.float32))
        counts[rows, cols] += 1
        weights[rows, cols] += share / (ww * hh)   # each pixel's weight in the step's loss
    for c in (counts, weights):
        rel = c / c.mean()
        assert rel.min() > 0.8 and rel.max() < 1.2, (rel.min(), rel.max())
        # the edge columns and rows as often as the middle, within the sampling noise
        for edge in (rel[:, 0], rel[:, -1], rel[0], rel[-1]):
            assert abs(float(edge.mean()) - 1) < 0.1


@pytest.mark.parametrize("n,k", [(270, 1), (480, 2), (400, 2), (1920, 6), (100, 7)])
def test_every_jittered_grid_partitions_the_range_into_cells_near_their_size(n, k):
    # Whatever the jitter, every index lies in exactly one of k cells, and axis_cell draws
    # one of them uniformly: every index is drawn 1/k of the time.
    g = torch.Generator().manual_seed(2)
    for jitter in [torch.full((k - 1,), -1.0), torch.full((k - 1,), 1.0)] + [
            torch.rand(k - 1, generator=g) * 2 - 1 for _ in range(50)]:
        bounds = axis_cells(n, k, jitter)
        assert len(bounds) == k + 1 and bounds[0] == 0 and bounds[-1] == n
        cells = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
        assert min(cells) >= n / k / 2 - 1 and max(cells) <= 1.5 * n / k + 1, cells
    torch.manual_seed(1)
    for _ in range(100):
        a, b = axis_cell(n, k)
        assert 0 <= a < b <= n


@pytest.mark.parametrize("size,limit,grid", [
    ((270, 480), 1 << 16, (1, 2)),       # fox at 1/4: two windows of 270 x 240
    ((400, 400), 1 << 16, (2, 2)),       # lego: four of 200 x 200
    ((1920, 1080), 1 << 16, (6, 6)),     # fox whole: 36 of 320 x 180
    ((40, 30), 600, (2, 1)),
    ((20, 300), 100, (1, 8))])           # no window narrower than MIN_PATCH
def test_the_window_grid_keeps_windows_near_the_limit(size, limit, grid):
    assert window_grid(*size, limit) == grid
    assert min(size[0] // grid[0], size[1] // grid[1]) >= MIN_PATCH


@pytest.mark.parametrize("step_pixels", [0, 600, 1200, 5000])
def test_views_within_the_step_pixels_are_drawn_whole(step_pixels):
    cam = _camera(40, 30)
    win_cam, window, share = _trainer(step_pixels).window(cam, 30, 40)
    if step_pixels in (0, 1200, 5000):     # no limit, or a view of no more pixels
        assert win_cam is cam and share == 1.0
        assert torch.zeros(30, 40)[window].shape == (30, 40)
    else:                                  # 600: one of two windows of about 20 x 30
        rows, cols = window
        assert 10 <= cols.stop - cols.start <= 30 and rows.stop - rows.start == 30


def test_negative_step_pixels_is_a_clean_error():
    from fieldkit.errors import FieldkitError
    from fieldkit.splats.model import SplatConfig, SplatModel

    with pytest.raises(FieldkitError, match="step-pixels"):
        SplatModel(SplatConfig(step_pixels=-1))
