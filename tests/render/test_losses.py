"""The distortion loss on packed samples against its O(S^2) definition."""
import pytest
import torch

from fieldkit.render.losses import distortion_loss, distortion_per_ray


def _brute(w, t0, t1):
    m = 0.5 * (t0 + t1)
    return (w[:, None] * w[None, :] * (m[:, None] - m[None, :]).abs()).sum() + \
        (w.square() * (t1 - t0)).sum() / 3


def _packed(counts, seed=0):
    g = torch.Generator().manual_seed(seed)
    ri, t0, t1, w = [], [], [], []
    for r, n in enumerate(counts):
        edges = torch.cumsum(torch.rand(n + 1, generator=g, dtype=torch.float64) + 0.01, 0)
        ri.append(torch.full((n,), r, dtype=torch.long))
        t0.append(edges[:-1])
        t1.append(edges[1:])
        w.append(torch.rand(n, generator=g, dtype=torch.float64) / max(n, 1))
    return torch.cat(w), torch.cat(t0), torch.cat(t1), torch.cat(ri)


def test_distortion_matches_the_definition_per_ray_and_its_gradient():
    counts = [5, 0, 1, 17, 3, 0]  # rays without samples and with one
    w, t0, t1, ri = _packed(counts)
    w.requires_grad_(True)
    got = distortion_per_ray(w, t0, t1, ri, len(counts))
    want, start = [], 0
    for n in counts:
        want.append(_brute(w[start:start + n], t0[start:start + n], t1[start:start + n]))
        start += n
    want = torch.stack(want)
    torch.testing.assert_close(got, want)
    assert got[1] == 0 and got[5] == 0
    g1, = torch.autograd.grad(got.sum(), w)
    g2, = torch.autograd.grad(want.sum(), w)
    torch.testing.assert_close(g1, g2)
    assert distortion_loss(w, t0, t1, ri, len(counts)).item() == pytest.approx(
        float(want.mean()))


def test_distortion_prefers_weight_in_one_place():
    # the same total weight on a ray: concentrated in one interval vs spread as fog
    t = torch.linspace(0, 4, 41)
    t0, t1, ri = t[:-1], t[1:], torch.zeros(40, dtype=torch.long)
    spread = torch.full((40,), 0.9 / 40)
    peaked = torch.zeros(40)
    peaked[20] = 0.9
    assert distortion_loss(peaked, t0, t1, ri, 1) < 0.05 * distortion_loss(spread, t0, t1, ri, 1)
    assert distortion_loss(torch.zeros(0), torch.zeros(0), torch.zeros(0),
                           torch.zeros(0, dtype=torch.long), 3).item() == 0.0


def test_contracted_intervals_are_box_units_inside_the_ball_and_squeezed_beyond():
    from fieldkit.render.losses import contract, contracted_intervals

    # the contraction itself: identity inside, 2 - 1/|x| outside, continuous at 1
    x = torch.tensor([[0.3, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 4.0], [1e6, 0.0, 0.0]],
                     dtype=torch.float64)
    torch.testing.assert_close(contract(x)[:2], x[:2])
    torch.testing.assert_close(contract(x)[2], torch.tensor([0.0, 0.0, 1.75], dtype=torch.float64))
    assert 1.999 < float(contract(x)[3].norm()) < 2.0
    # ray 0 runs through the ball (x from -0.9 to 0.9) with a skipped gap; ray 1 runs outward
    # from radius 2 to 10 in 8 unit steps
    origins = torch.tensor([[-0.9, 0.0, 0.0], [2.0, 0.0, 0.0]], dtype=torch.float64)
    dirs = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    t0 = torch.tensor([0.0, 0.2, 1.0, *range(8)], dtype=torch.float64)
    t1 = torch.tensor([0.2, 0.4, 1.8, *range(1, 9)], dtype=torch.float64)
    ri = torch.tensor([0, 0, 0] + [1] * 8)
    s0, s1 = contracted_intervals(origins, dirs, t0, t1, ri, 2)
    torch.testing.assert_close(s0[:3], t0[:3])   # inside the ball: plain t from the first sample
    torch.testing.assert_close(s1[:3], t1[:3])
    r = 2.0 + torch.arange(9, dtype=torch.float64)   # ray 1: radii of the interval ends
    torch.testing.assert_close(s1[3:], (1 / r[0] - 1 / r[1:]))
    assert torch.all(s1[3:] - s0[3:] < 0.25) and torch.all(s0[4:] >= s1[3:-1] - 1e-12)
