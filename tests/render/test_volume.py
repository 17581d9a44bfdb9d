"""Ray marching and compositing: hand-computed values, packed vs dense reference, empty-space
skipping and early stop."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fieldkit.render import (OccupancyGrid, RaySamples, accumulate, march, midpoints,
                             packed_info_from, ray_aabb, render_dense, render_rays,
                             render_weights)

e = math.exp


# ---------------------------------------------------------------------------- ray_aabb
def test_ray_aabb_hand_cases():
    box = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    o = torch.tensor([
        [-3.0, 0.0, 0.0],  # along +x through the box: enters at t=2, leaves at t=4
        [0.0, 0.0, 0.0],  # from the centre along +z: t_near clamped to 0, exit at 1
        [-3.0, 2.0, 0.0],  # parallel to x but above the box: miss
        [3.0, 0.0, 0.0],  # box behind the ray: miss
        [-2.0, -2.0, -2.0],  # diagonal (unit dir): sqrt(3) .. 3 sqrt(3)
        [-3.0, 0.0, 0.0],  # non-unit dir (2, 0, 0): t in units of |dir|: 1 .. 2
        [-1.0, 1.0, 0.0],  # on the closed box's edge, parallel to it: 0 .. 2
        [0.5, 0.5, 5.0],  # along -z: 4 .. 6
    ])
    d = torch.tensor([
        [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0],
        [1 / math.sqrt(3)] * 3, [2.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0],
    ])
    t0, t1 = ray_aabb(o, d, box)
    s3 = math.sqrt(3)
    hits = [0, 1, 4, 5, 6, 7]
    want0 = torch.tensor([2.0, 0.0, s3, 1.0, 0.0, 4.0])
    want1 = torch.tensor([4.0, 1.0, 3 * s3, 2.0, 2.0, 6.0])
    assert torch.allclose(t0[hits], want0, atol=1e-5) and torch.allclose(t1[hits], want1, atol=1e-5)
    assert (t0[[2, 3]] >= t1[[2, 3]]).all()
    assert (t0 >= 0).all()
    # asymmetric box, ray from inside going -y
    t0, t1 = ray_aabb(torch.tensor([[0.5, 0.25, 3.0]]), torch.tensor([[0.0, -1.0, 0.0]]),
                      torch.tensor([0.0, -1.0, 2.0, 1.0, 0.5, 4.0]))
    assert t0.tolist() == [0.0] and t1.tolist() == [1.25]


# ---------------------------------------------------------------------------- compositing
def _packed(sigmas, bounds, rays, n_rays):
    t = torch.tensor(bounds)
    ri = torch.tensor(rays)
    return torch.tensor(sigmas), t[:, 0], t[:, 1], ri, RaySamples(ri, t[:, 0], t[:, 1],
                                                                  packed_info_from(ri, n_rays))


@pytest.mark.parametrize("bg_kind", ["white", "black", "random"])
def test_compositing_by_hand(bg_kind):
    # ray 0: 3 samples; ray 1: none; ray 2: 2 samples (checks per-ray segmentation)
    sig, ts, te, ri, samples = _packed(
        [1.0, 2.0, 0.5, 3.0, 1.0],
        [[0.0, 0.5], [0.5, 1.0], [1.0, 2.0], [1.0, 1.2], [1.2, 1.6]], [0, 0, 0, 2, 2], 3)
    rgb = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5], [1, 0, 1]])
    bg = {"white": torch.ones(3), "black": torch.zeros(3),
          "random": torch.rand(3, 3, generator=torch.Generator().manual_seed(1))}[bg_kind]

    # ray 0: sigma*delta = 0.5, 1.0, 0.5
    a0 = [1 - e(-0.5), 1 - e(-1.0), 1 - e(-0.5)]
    T0 = [1.0, e(-0.5), e(-1.5)]
    w0 = [T0[i] * a0[i] for i in range(3)]  # 0.393469, 0.383400, 0.087795
    op0 = 1 - e(-2.0)
    # ray 2: sigma*delta = 0.6, 0.4 and its transmittance restarts at 1
    a2 = [1 - e(-0.6), 1 - e(-0.4)]
    T2 = [1.0, e(-0.6)]
    w2 = [T2[0] * a2[0], T2[1] * a2[1]]  # 0.451188, 0.180932
    op2 = 1 - e(-1.0)
    assert abs(w0[1] - 0.383400) < 1e-6 and abs(w2[1] - 0.180932) < 1e-6

    weights, trans, alphas = render_weights(sig, ts, te, ri, 3)
    assert torch.allclose(weights, torch.tensor(w0 + w2), atol=1e-6)
    assert torch.allclose(trans, torch.tensor(T0 + T2), atol=1e-6)
    assert torch.allclose(alphas, torch.tensor(a0 + a2), atol=1e-6)

    bgr = bg.expand(3, 3)
    want_rgb = torch.tensor([
        [w0[0], w0[1], w0[2]],
        [0.0, 0.0, 0.0],
        [0.5 * w2[0] + w2[1], 0.5 * w2[0], 0.5 * w2[0] + w2[1]],
    ]) + (1 - torch.tensor([[op0], [0.0], [op2]])) * bgr
    want_depth = torch.tensor([[(0.25 * w0[0] + 0.75 * w0[1] + 1.5 * w0[2]) / op0], [0.0],
                               [(1.1 * w2[0] + 1.4 * w2[1]) / op2]])

    out = render_rays(lambda a, b, c: (rgb[:len(c)], sig[:len(c)]), samples, 3, bg)
    assert out["num_samples"] == 5
    assert torch.allclose(out["rgb"], want_rgb, atol=1e-6)
    assert torch.allclose(out["alpha"], torch.tensor([[op0], [0.0], [op2]]), atol=1e-6)
    assert torch.allclose(out["depth"], want_depth, atol=1e-6)
    assert torch.allclose(accumulate(weights, None, ri, 3), out["alpha"])
    assert accumulate(weights, 0.5 * (ts + te), ri, 3).shape == (3, 1)


def test_render_rays_without_samples():
    empty = RaySamples(torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0),
                       torch.zeros(4, 2, dtype=torch.long))
    bg = torch.rand(4, 3)
    out = render_rays(lambda *a: pytest.fail("field called without samples"), empty, 4, bg)
    assert torch.equal(out["rgb"], bg) and (out["alpha"] == 0).all() and out["num_samples"] == 0


# ---------------------------------------------------------------------------- fields
class Blob(nn.Module):
    """Gaussian blob of density with position-dependent colour."""

    def __init__(self) -> None:
        super().__init__()
        self.amp = nn.Parameter(torch.tensor(6.0))
        self.center = nn.Parameter(torch.tensor([0.1, -0.1, 0.05]))
        self.colour = nn.Parameter(torch.tensor([[2.0, -1.0, 0.5], [0.3, 1.5, -2.0],
                                                 [-1.0, 0.2, 1.0]]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = self.amp * torch.exp(-((x - self.center) ** 2).sum(-1) / (2 * 0.3**2))
        return torch.sigmoid(x @ self.colour), sigma


def packed_fn(field, o, d):
    return lambda ts, te, ri: field(midpoints(o, d, ts, te, ri))


def dense_fn(field, o, d):
    return lambda ts, te: field(o[:, None] + d[:, None] * (0.5 * (ts + te))[..., None])


def rays_towards_origin(n, start, spread, seed=0):
    g = torch.Generator().manual_seed(seed)
    o = torch.tensor(start) + 0.2 * (torch.rand(n, 3, generator=g) - 0.5)
    target = spread * (torch.rand(n, 3, generator=g) - 0.5)
    d = target - o
    return o, d / d.norm(dim=-1, keepdim=True)


BIG = torch.tensor([-5.0, -5.0, -5.0, 5.0, 5.0, 5.0])


# ---------------------------------------------------------------------------- march
def test_march_layout_chunking_and_limits():
    o, d = rays_towards_origin(64, [0.0, 0.0, -3.0], 1.0)
    box = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    o[:4] = torch.tensor([0.0, 5.0, -3.0])  # these miss the box
    s = march(o, d, None, step_size=0.05, aabb=box)
    ri = s.ray_indices
    assert ri.dtype == torch.int64 and (ri[1:] >= ri[:-1]).all()
    assert torch.equal(s.packed_info, packed_info_from(ri, 64)) and (s.packed_info[:4, 1] == 0).all()
    t0, t1 = ray_aabb(o, d, box)
    assert (s.t_starts >= t0[ri] - 1e-6).all() and (s.t_ends <= t1[ri] + 1e-6).all()
    assert (s.t_ends > s.t_starts).all()
    same = ri[1:] == ri[:-1]  # consecutive intervals of a ray are contiguous, one step long
    assert torch.allclose(s.t_starts[1:][same], s.t_ends[:-1][same], atol=1e-5)
    assert torch.allclose((s.t_ends - s.t_starts)[:-1][same], torch.tensor(0.05), atol=1e-5)
    counts = s.packed_info[4:, 1].float()
    assert torch.equal(counts, torch.ceil((t1 - t0)[4:] / 0.05 - 1e-4))

    small = march(o, d, None, step_size=0.05, aabb=box, max_candidates=100)  # many chunks
    assert torch.equal(small.ray_indices, ri) and torch.equal(small.t_starts, s.t_starts)

    capped = march(o, d, None, step_size=0.05, aabb=box, max_samples_per_ray=7)
    assert capped.packed_info[:, 1].max() == 7
    assert torch.equal(capped.packed_info[:, 1], s.packed_info[:, 1].clamp(max=7))

    torch.manual_seed(0)
    strat = march(o, d, None, step_size=0.05, aabb=box, stratified=True)
    first = strat.t_starts[strat.packed_info[4:, 0]]
    off = first - t0[4:]
    assert (off >= 0).all() and (off < 0.05).all() and off.std() > 0.005


def test_packed_matches_dense_values_and_gradients():
    o, d = rays_towards_origin(128, [0.0, 0.0, -2.0], 0.8)
    near, far, n = 0.5, 3.5, 96  # step 1/32: identical t's in both paths
    bg = torch.rand(128, 3, generator=torch.Generator().manual_seed(3))
    field = Blob()
    grid = OccupancyGrid(BIG, 8)  # all occupied
    s = march(o, d, grid, near=near, far=far, step_size=(far - near) / n, aabb=BIG)
    assert len(s) == 128 * n
    packed = render_rays(packed_fn(field, o, d), s, 128, bg)
    loss_p = (packed["rgb"] ** 2).sum() + packed["depth"].sum()
    grads_p = torch.autograd.grad(loss_p, list(field.parameters()))
    dense = render_dense(dense_fn(field, o, d), o, d, near, far, n, bg)
    loss_d = (dense["rgb"] ** 2).sum() + dense["depth"].sum()
    grads_d = torch.autograd.grad(loss_d, list(field.parameters()))
    assert torch.equal(s.t_starts.reshape(128, n), dense["t_starts"])
    for key in ("rgb", "depth", "alpha"):
        assert torch.allclose(packed[key], dense[key], atol=1e-5, rtol=0), key
    assert dense["alpha"].max() > 0.5  # the blob is actually seen
    for gp, gd in zip(grads_p, grads_d):
        assert torch.allclose(gp, gd, rtol=1e-4, atol=1e-4), (gp, gd)


def test_empty_space_skipping_matches_dense():
    """Tolerance: the grid keeps exactly the dense samples whose midpoint lies in an occupied
    cell, so the only error comes from cells the sphere merely grazes that no jittered update
    point hit (density there is tiny, at the sphere's rim). Removing samples of total optical
    depth tau_M from a ray changes its opacity and each colour channel (colours and
    background in [0, 1]) by at most eps = 1 - exp(-tau_M), and the depth by at most
    2 * far * eps / opacity. We check these per-ray bounds, and that eps itself is small."""
    c, rad = torch.tensor([0.2, 0.1, -0.1]), 0.3

    def density(x):
        return 20.0 * (1 - ((x - c) ** 2).sum(-1) / rad**2).clamp_min(0) ** 2

    def field(x):
        return torch.sigmoid(3 * x), density(x)

    torch.manual_seed(0)
    grid = OccupancyGrid(torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]), 32)
    for step in range(320):  # 16 warm-up updates, then 4 partial ones
        grid.update(step, density)
    o, d = rays_towards_origin(1024, [0.0, 0.0, -3.0], 1.2)
    near, far, n = 1.5, 4.5, 256
    step_size = (far - near) / n
    s = march(o, d, grid, near=near, far=far, step_size=step_size, aabb=BIG)
    pts = midpoints(o, d, s.t_starts, s.t_ends, s.ray_indices)
    cell_diag = math.sqrt(3) * 2 / 32
    assert ((pts - c).norm(dim=-1) < rad + cell_diag).all()  # only near the sphere
    assert 0 < len(s) < 0.05 * 1024 * n

    bg = torch.ones(3)
    packed = render_rays(lambda a, b, i: field(midpoints(o, d, a, b, i)), s, 1024, bg)
    dense = render_dense(dense_fn(field, o, d), o, d, near, far, n, bg)
    dmid = o[:, None] + d[:, None] * (0.5 * (dense["t_starts"] + dense["t_ends"]))[..., None]
    missed = ~grid.occupied_at(dmid.reshape(-1, 3)).reshape(1024, n)
    eps = 1 - torch.exp(-(density(dmid) * missed * step_size).sum(-1, keepdim=True))
    assert eps.max() < 1e-2 and dense["alpha"].max() > 0.9
    assert ((packed["rgb"] - dense["rgb"]).abs() <= eps + 1e-5).all()
    assert ((packed["alpha"] - dense["alpha"]).abs() <= eps + 1e-5).all()
    seen = dense["alpha"] > 1e-2
    bound = 2 * far * eps / dense["alpha"].clamp_min(1e-2) + 1e-4
    assert ((packed["depth"] - dense["depth"]).abs() <= bound)[seen].all()


def test_early_stop_behind_opaque_slab():
    blob = Blob()

    def field(x):
        rgb, sigma = blob(x - torch.tensor([0.0, 0.0, 0.6]))  # blob behind the slab
        slab = 1000.0 * (x[:, 2].abs() < 0.1)
        return torch.where(slab[:, None] > 0, 0.2, rgb), sigma + slab

    g = torch.Generator().manual_seed(5)
    o = torch.cat([torch.rand(256, 2, generator=g) - 0.5, torch.full((256, 1), -2.0)], -1)
    d = torch.tensor([0.0, 0.0, 1.0]) + 0.1 * (torch.rand(256, 3, generator=g) - 0.5)
    d = d / d.norm(dim=-1, keepdim=True)
    box = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    fn = packed_fn(field, o, d)
    sigma_fn = lambda a, b, i: fn(a, b, i)[1]  # noqa: E731
    with torch.no_grad():
        full = march(o, d, None, step_size=0.01, aabb=box)
        pruned = march(o, d, None, step_size=0.01, aabb=box, sigma_fn=sigma_fn)
        z = lambda s: midpoints(o, d, s.t_starts, s.t_ends, s.ray_indices)[:, 2]  # noqa: E731
        assert (z(full) > 0.3).any()
        assert z(pruned).max() < 0.1 + 0.02 and len(pruned) < 0.6 * len(full)
        out_full = render_rays(fn, full, 256, torch.ones(3))
        out_pruned = render_rays(fn, pruned, 256, torch.ones(3))
        assert (out_full["rgb"] - out_pruned["rgb"]).abs().max() < 1e-3

        thre = march(o, d, None, step_size=0.01, aabb=box, sigma_fn=sigma_fn, alpha_thre=0.01)
        sig = sigma_fn(thre.t_starts, thre.t_ends, thre.ray_indices)
        assert (1 - torch.exp(-sig * (thre.t_ends - thre.t_starts)) >= 0.01).all()
        assert len(thre) < len(pruned)


@pytest.mark.parametrize("stratified,radii,inside", [
    (False, None, False), (True, None, False), (False, None, True),
    (False, (1,), False), (True, (2,), True), (False, (8, 3, 1), True)])
def test_hierarchical_skipping_gives_the_same_samples(monkeypatch, stratified, radii, inside):
    """The coarse levels only remove candidates that the fine occupancy test would drop, for
    rays from outside and from inside the box, at every level layout."""
    import fieldkit.render.volume as volume

    g = torch.Generator().manual_seed(0)
    grid = OccupancyGrid(torch.tensor([-1.0, -1, -1, 1, 1, 1]), resolution=32)
    grid.binary.copy_(torch.rand(32, 32, 32, generator=g) < 0.02)   # scattered occupied cells
    grid.binary[10:14, 3:9, 20:30] = True                            # and a solid block
    grid.binary[0, :, 31] = True                                     # and cells on the faces
    centre = torch.tensor([0.0, 0.0, -0.2 if inside else -3.0])
    origins = torch.randn(3000, 3, generator=g) * 0.3 + centre
    dirs = torch.nn.functional.normalize(torch.randn(3000, 3, generator=g) * (
        1.0 if inside else 0.3) + torch.tensor([0.0, 0.0, 1.0]), dim=-1)
    aabb = torch.tensor([-1.0, -1, -1, 1, 1, 1])
    if radii is not None:
        monkeypatch.setattr(volume, "SKIP_RADII", radii)

    def run():
        torch.manual_seed(1)
        return march(origins, dirs, grid, step_size=2 * math.sqrt(3) / 256, aabb=aabb,
                     stratified=stratified, max_candidates=50_000)

    two_level = run()
    monkeypatch.setattr(volume, "_coarse_steps", lambda *a, **k: None)
    one_level = run()
    assert len(one_level) > 1000
    for name in ("ray_indices", "t_starts", "t_ends", "packed_info"):
        assert torch.equal(getattr(two_level, name), getattr(one_level, name)), name
