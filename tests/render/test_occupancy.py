"""OccupancyGrid: warm-up marks exactly the right cells, the update schedule and EMA follow
nerfacc, lookups, and the state_dict round-trips through safetensors."""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from fieldkit.render import OccupancyGrid

AABB = [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]
R = 16  # cell size 0.125
LO, HI = (4, 2, 10), (8, 5, 12)  # occupied block of cells [LO, HI) per axis: 4 x 3 x 2 = 24


def block_density(points: torch.Tensor) -> torch.Tensor:
    """[N, 3] -> [N]: 1 inside the cell-aligned block [LO, HI), 0 elsewhere."""
    ijk = torch.floor((points + 1.0) / 2.0 * R)
    inside = (ijk >= torch.tensor(LO)) & (ijk < torch.tensor(HI))
    return inside.all(-1).float()


def expected_block() -> torch.Tensor:
    want = torch.zeros(R, R, R, dtype=torch.bool)
    want[LO[0]:HI[0], LO[1]:HI[1], LO[2]:HI[2]] = True
    return want


def test_initial_state_all_occupied():
    grid = OccupancyGrid(torch.tensor(AABB), R)
    assert grid.binary.shape == (R, R, R) and grid.binary.dtype == torch.bool
    assert grid.binary.all() and grid.density.shape == (R**3,) and (grid.density == 0).all()
    with pytest.raises(ValueError):
        OccupancyGrid([0, 0, 0, 1, -1, 1], 8)


def test_warmup_marks_exact_cells():
    grid = OccupancyGrid(AABB, R)
    grid.update(0, block_density)
    assert torch.equal(grid.binary, expected_block())
    dens = grid.density.reshape(R, R, R)
    assert (dens[expected_block()] == 1).all() and (dens[~expected_block()] == 0).all()


def test_update_schedule_and_ema():
    grid = OccupancyGrid(AABB, R)
    grid.update(0, block_density, n=16)
    before = grid.density.clone()
    calls = []

    def zero_counting(points):
        calls.append(points.shape[0])
        return torch.zeros(points.shape[0])

    for step in range(1, 16):  # not a multiple of n: nothing happens
        grid.update(step, zero_counting, n=16)
    assert calls == [] and torch.equal(grid.density, before)

    # After warm-up: a random quarter of all cells + (all, since few) occupied cells.
    grid.update(256, zero_counting, n=16, warmup_steps=256)
    assert sum(calls) == R**3 // 4 + 24
    dens = grid.density.reshape(R, R, R)
    # every occupied cell was drawn: 1 * decay; other cells stay 0
    assert torch.allclose(dens[expected_block()], torch.tensor(0.95))
    assert (dens[~expected_block()] == 0).all()
    assert torch.equal(grid.binary, expected_block())  # 0.95 > min(mean, 0.01)

    # EMA is a max: a larger new density replaces the decayed one
    grid.update(512, lambda p: 3.0 * block_density(p), n=16, warmup_steps=256)
    assert torch.allclose(grid.density.reshape(R, R, R)[expected_block()], torch.tensor(3.0))


def test_sphere_cells_and_threshold():
    """Cells well inside a sphere of density are occupied; cells entirely outside are not."""
    c, rad, res = torch.tensor([0.1, -0.2, 0.05]), 0.5, 24
    grid = OccupancyGrid(AABB, res)
    grid.update(0, lambda p: 50.0 * (((p - c) ** 2).sum(-1) < rad**2).float())
    centers = grid.cell_points(torch.arange(res**3), jitter=False)
    dist = (centers - c).norm(dim=-1).reshape(res, res, res)
    half_diag = math.sqrt(3) * (2.0 / res) / 2
    assert grid.binary[dist + half_diag < rad].all()  # wholly inside
    assert not grid.binary[dist - half_diag > rad].any()  # wholly outside
    # threshold = min(mean, occ_thre): with mean > occ_thre = 0.01 a density of 0.005 is empty,
    # but alone (mean < 0.005) the same faint density is occupied.
    faint = lambda p: 0.005 * ((p[:, 0] < 0) & (p[:, 1] > 0)).float()  # noqa: E731
    mixed = OccupancyGrid(AABB, 8)
    mixed.update(0, lambda p: (p[:, 0] > 0).float() + faint(p))
    assert torch.equal(mixed.binary, mixed.cell_points(torch.arange(512), False)[:, 0]
                       .reshape(8, 8, 8) > 0)
    alone = OccupancyGrid(AABB, 8)
    alone.update(0, faint)
    centers = alone.cell_points(torch.arange(512), False).reshape(8, 8, 8, 3)
    assert torch.equal(alone.binary, (centers[..., 0] < 0) & (centers[..., 1] > 0))


def test_occupied_at():
    grid = OccupancyGrid(AABB, R)
    grid.update(0, block_density)
    lo = torch.tensor(LO, dtype=torch.float32)
    centre = -1.0 + (lo + 0.5) * (2.0 / R)  # centre of cell LO
    pts = torch.stack([
        centre,
        torch.tensor([0.9, 0.9, 0.9]),  # inside the box, empty cell
        torch.tensor([1.5, 0.0, 0.0]),  # outside the box
        torch.tensor([float("nan"), 0.0, 0.0]),
    ])
    assert grid.occupied_at(pts).tolist() == [True, False, False, False]
    full = OccupancyGrid(AABB, R)  # all occupied: the closed box is inside, outside is not
    edge = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0], [1.0001, 0.0, 0.0]])
    assert full.occupied_at(edge).tolist() == [True, True, False]


def test_state_dict_safetensors_round_trip(tmp_path):
    torch.manual_seed(0)
    grid = OccupancyGrid(torch.tensor([-2.0, -1.0, -0.5, 2.0, 1.0, 0.5]), R)
    for step in range(0, 300, 16):
        grid.update(step, lambda p: torch.rand(p.shape[0]) * (p[:, 0] > 0))
    path = tmp_path / "grid.safetensors"
    save_file(grid.state_dict(), str(path))
    loaded = OccupancyGrid(AABB, R)
    loaded.load_state_dict(load_file(str(path)))
    for name, buf in grid.state_dict().items():
        other = loaded.state_dict()[name]
        assert other.dtype == buf.dtype and torch.equal(other, buf), name
    assert set(grid.state_dict()) == {"aabb", "density", "binary"}


def test_dilated_marks_cells_within_k_and_follows_binary():
    grid = OccupancyGrid(torch.tensor([-1.0, -1, -1, 1, 1, 1]), resolution=16)
    grid.binary.zero_()
    grid.binary[5, 8, 15] = True
    ijk = torch.stack(torch.meshgrid(*[torch.arange(16)] * 3, indexing="ij"), -1).reshape(-1, 3)
    for k in (1, 2):
        near = ((ijk - torch.tensor([5, 8, 15])).abs() <= k).all(-1)
        assert torch.equal(grid.dilated(k), near)
    grid.binary[0, 0, 0] = True   # an in-place change of the grid invalidates the cache
    assert bool(grid.dilated(1)[0]) and bool(grid.dilated(1)[(1 * 16 + 1) * 16 + 1])
    grid.load_state_dict({k: v.clone() for k, v in OccupancyGrid(
        grid.aabb, resolution=16).state_dict().items()})
    assert bool(grid.dilated(2).all())


def test_cascades_layout_lookup_and_update(tmp_path):
    grid = OccupancyGrid(torch.tensor([0.0, 0, 0, 2, 2, 2]), 4, levels=3)   # centre (1, 1, 1)
    want = torch.tensor([[0.0, 0, 0, 2, 2, 2], [-1, -1, -1, 3, 3, 3], [-3, -3, -3, 5, 5, 5]])
    assert torch.equal(grid.level_aabbs, want) and grid.binary.shape == (3, 4, 4, 4)
    assert grid.num_cells == 3 * 64 and grid.density.shape == (192,)
    # a cell's points lie in its level's box, outside the finer one, and look up to that cell
    grid.binary.zero_()
    for level, ijk in ((0, (1, 2, 3)), (1, (0, 3, 1)), (2, (3, 0, 0))):
        grid.binary[(level, *ijk)] = True
        flat = torch.tensor([level * 64 + (ijk[0] * 4 + ijk[1]) * 4 + ijk[2]])
        assert torch.equal(grid.cell_coords(flat)[0], torch.tensor(ijk))
        p = grid.cell_points(flat.repeat(100))
        box = want[level]
        assert ((p >= box[:3]) & (p <= box[3:])).all()
        assert grid.occupied_at(p).all()
    off = torch.tensor([[1.1, 1.0, 1.0],     # level 0, empty cell
                        [1.0, 1.0, 2.5],     # level 1, empty cell
                        [5.01, 1.0, 1.0],    # beyond the coarsest level
                        [float("inf"), 0.0, 0.0], [float("nan"), 0.0, 0.0]])
    assert not grid.occupied_at(off).any()
    # a level-1 cell inside level 0's box is not what a point there looks up
    grid.binary.zero_()
    grid.binary[1, 1:3, 1:3, 1:3] = True
    assert not grid.occupied_at(torch.tensor([[1.0, 1.0, 1.0]])).any()
    # warm-up: every cell of every level, from its own box (a cube of half-size 2 about the
    # centre fills levels 0 and 1, and the middle 2^3 cells of level 2)
    grid.update(0, lambda p: ((p - 1).abs().amax(-1) < 2).float())
    want = torch.zeros(3, 4, 4, 4, dtype=torch.bool)
    want[:2] = True
    want[2, 1:3, 1:3, 1:3] = True
    assert torch.equal(grid.binary, want)
    # cells a point can look up: level 0, and the outer shell of levels 1 and 2
    shell = torch.ones(4, 4, 4, dtype=torch.bool)
    shell[1:3, 1:3, 1:3] = False
    assert torch.equal(grid.looked_up(), torch.cat([torch.ones(64, dtype=torch.bool),
                                                    shell.reshape(-1), shell.reshape(-1)]))
    path = tmp_path / "g.safetensors"
    save_file(grid.state_dict(), str(path))
    loaded = OccupancyGrid(grid.aabb, 4, levels=3)
    loaded.load_state_dict(load_file(str(path)))
    assert torch.equal(loaded.binary, grid.binary) and loaded.same_layout(grid)
    assert not loaded.same_layout(OccupancyGrid(grid.aabb, 4))
    with pytest.raises(ValueError):
        OccupancyGrid(AABB, 4, levels=0)
