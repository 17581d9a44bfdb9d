"""Cone stepping (``march_cone``): the closed-form lattice against a sequential reference,
agreement with ``march`` at cone_angle 0, exact tiling, and filtering with cascaded grids."""
from __future__ import annotations

import math

import pytest
import torch

from fieldkit.render import OccupancyGrid, march, ray_aabb, render_rays
from fieldkit.render.cone import ConeLattice, march_cone

BOX = torch.tensor([-4.0, -4.0, -4.0, 4.0, 4.0, 4.0])


def _sequential(t0: float, t1: float, step: float, cone: float, max_step: float) -> list[float]:
    """The lattice as instant-ngp steps it: t += clamp(t * cone, step, max_step), one at a
    time; the last interval is kept when longer than 1e-4 of its step."""
    ts = [t0]
    while True:
        t = ts[-1]
        dt = min(max(t * cone, step), max_step)
        if t1 - t <= 1e-4 * dt:
            break
        ts.append(t + dt)
        if ts[-1] >= t1:
            break
    return ts


@pytest.mark.parametrize("cone, max_step", [(1 / 64, 0.2), (1 / 256, 1e10), (0.0, 1e10)])
def test_lattice_matches_sequential_stepping(cone, max_step):
    g = torch.Generator().manual_seed(0)
    t0 = torch.rand(64, generator=g, dtype=torch.float64) * 3
    t1 = t0 + torch.rand(64, generator=g, dtype=torch.float64) * 12
    t1[:4] = t0[:4]           # empty rays
    step = 0.01
    lat = ConeLattice(t0, t1, step, cone, max_step)
    for r in range(64):
        want = _sequential(float(t0[r]), float(t1[r]), step, cone, max_step)
        n = int(lat.counts[r])
        assert n == len(want) - 1, (r, n, len(want) - 1)
        if n == 0:
            continue
        k = torch.arange(n)
        ray = torch.full_like(k, r)
        s, e = lat.intervals(ray, k)
        ref = torch.tensor(want, dtype=torch.float64)
        assert torch.allclose(s, ref[:-1], rtol=1e-9, atol=1e-9)
        assert torch.allclose(e, ref[1:].clamp_max(float(t1[r])), rtol=1e-9, atol=1e-9)
        assert torch.equal(s[1:], e[:-1])           # the intervals tile the ray exactly
        assert float(e[-1]) == float(t1[r]) and float(s[0]) == float(t0[r])


def test_lattice_regimes_by_hand():
    # step 0.1 up to t = 1 (0.1 / 0.1), then x1.1 per step up to t = 5 (0.5 / 0.1), then 0.5
    lat = ConeLattice(torch.tensor([0.0]), torch.tensor([8.0]), 0.1, 0.1, 0.5)
    n_b = math.ceil(math.log(5.0) / math.log(1.1))
    v0 = 1.0 * 1.1 ** n_b
    assert (int(lat.n_a), int(lat.n_b), int(lat.n_c)) == (10, n_b, math.ceil((8 - v0) / 0.5))
    t = lat.at(torch.zeros(int(lat.counts) + 1, dtype=torch.long),
               torch.arange(int(lat.counts) + 1))
    dt = t.diff()
    assert torch.allclose(dt[:10], torch.full((10,), 0.1), atol=1e-6)
    assert torch.allclose(dt[10:10 + n_b], 0.1 * t[10:10 + n_b], rtol=1e-5)
    assert torch.allclose(dt[10 + n_b:], torch.full_like(dt[10 + n_b:], 0.5), atol=1e-5)
    with pytest.raises(ValueError):
        ConeLattice(torch.zeros(1), torch.ones(1), 0.1, 0.1, 0.05)


def _rays(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(n, 3, generator=g) * 1.5
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return o, d


def test_zero_cone_angle_is_the_uniform_march():
    o, d = _rays(300)
    grid = OccupancyGrid(BOX, 16)
    grid.binary.copy_(torch.rand(16, 16, 16, generator=torch.Generator().manual_seed(1)) < 0.3)
    a = march(o, d, grid, step_size=0.05, aabb=BOX)
    b = march_cone(o, d, grid, step_size=0.05, cone_angle=0.0, aabb=BOX)
    assert len(a) > 1000 and torch.equal(a.ray_indices, b.ray_indices)
    assert torch.allclose(a.t_starts, b.t_starts, atol=1e-5)
    assert torch.allclose(a.t_ends, b.t_ends, atol=1e-5)


def test_cone_steps_composite_a_homogeneous_medium_exactly():
    # constant density: the opacity of a ray depends only on its length in the box, whatever
    # the lattice, so any gap or overlap between intervals would show
    o, d = _rays(200, seed=2)
    samples = march_cone(o, d, None, step_size=0.01, cone_angle=1 / 32, max_step=0.3,
                         aabb=BOX, max_candidates=5000)
    sigma = 0.3

    def rgb_sigma(t0, t1, ray):
        return torch.ones(len(t0), 3), torch.full((len(t0),), sigma)

    out = render_rays(rgb_sigma, samples, len(o), torch.zeros(3))
    t_near, t_far = ray_aabb(o, d, BOX)
    want = 1 - torch.exp(-sigma * (t_far - t_near).clamp_min(0))
    assert torch.allclose(out["alpha"][:, 0], want, atol=1e-5)
    uniform = march(o, d, None, step_size=0.01, aabb=BOX)
    assert len(samples) < 0.5 * len(uniform)            # the cone saves samples far out


def test_cascaded_grid_filters_candidates_and_pruning_follows_sigma():
    grid = OccupancyGrid(torch.tensor([-1.0, -1, -1, 1, 1, 1]), 8, levels=3)  # covers BOX
    g = torch.Generator().manual_seed(3)
    grid.binary.copy_(torch.rand(grid.binary.shape, generator=g) < 0.4)
    o, d = _rays(400, seed=4)
    kw = dict(step_size=0.02, cone_angle=1 / 64, max_step=0.25, aabb=BOX)
    every = march_cone(o, d, None, **kw)
    kept = march_cone(o, d, grid, **kw)
    mids = o[every.ray_indices] + d[every.ray_indices] * every.t_mids[:, None]
    mask = grid.occupied_at(mids)
    assert 0 < len(kept) < len(every)
    assert torch.equal(kept.ray_indices, every.ray_indices[mask])
    assert torch.equal(kept.t_starts, every.t_starts[mask])

    def opaque_shell(t0, t1, ray):   # dense beyond radius 2: rays stop soon after reaching it
        p = o[ray] + d[ray] * (0.5 * (t0 + t1))[:, None]
        return torch.where(p.norm(dim=-1) > 2.0, 50.0, 0.0)

    pruned = march_cone(o, d, None, sigma_fn=opaque_shell, **kw)
    p = o[pruned.ray_indices] + d[pruned.ray_indices] * pruned.t_mids[:, None]
    assert len(pruned) < len(every)
    # in the shell a sample's alpha is >= 1 - exp(-50 * 0.02) = 0.63: a ray keeps at most
    # ceil(log(1e-4) / log(0.37)) = 10 samples there before its transmittance drops below 1e-4
    dense = torch.bincount(pruned.ray_indices[p.norm(dim=-1) > 2.0], minlength=len(o))
    assert int(dense.max()) <= 10 and int(dense.sum()) > len(o)
