"""The crop box's occupancy-grid cut: cells wholly outside the box are emptied, the others keep
their state (single and cascaded grids)."""
import pytest
import torch

from fieldkit.render.crop import CropBox, crop_grid
from fieldkit.render.occupancy import OccupancyGrid


@pytest.mark.parametrize("levels", [1, 2])
def test_crop_grid_empties_the_cells_outside_only(levels):
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=8, levels=levels)
    grid.density.fill_(5.0)
    box = CropBox((0.1, -1.0, -1.0), (1.0, 1.0, 1.0))
    crop_grid(grid, box)
    cells = torch.arange(grid.num_cells)
    lo = grid.cell_points(cells, offset=torch.zeros(len(cells), 3))
    hi = grid.cell_points(cells, offset=torch.ones(len(cells), 3))
    kept = grid.binary.reshape(-1)
    # the cells that hold x = 0.1 stay; a coarser level's cells beyond the box's faces go
    assert torch.equal(kept, ((hi >= torch.tensor(box.lo)) & (lo <= torch.tensor(box.hi))
                              ).all(-1))
    assert torch.equal(grid.density > 0, kept)
    assert not bool(grid.occupied_at(torch.tensor([[-0.5, 0.0, 0.0]])))
    assert bool(grid.occupied_at(torch.tensor([[0.5, 0.0, 0.0]])))
    assert kept.sum() < grid.num_cells // 2 + grid.num_cells // 8


def test_crop_model_refuses_an_inverted_box():
    """The viewer's min/max fields are free: an export with min > max says so in one line."""
    from fieldkit.errors import FieldkitError
    from fieldkit.render.crop import crop_model

    with pytest.raises(FieldkitError, match="minimum corner .* must lie below"):
        crop_model(torch.nn.Module(), CropBox((0.5, 0.0, 0.0), (0.0, 1.0, 1.0)))
