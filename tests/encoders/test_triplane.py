"""Tri-plane encoder: per-point bilinear reference, hand-worked values, gradients, regularisers."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from fieldkit.encoders.triplane import PLANE_AXES, TriPlane, TriPlaneConfig

MODES = ["product", "sum", "concat"]
AXES = ((0, 1), (0, 2), (1, 2))
"""Planes xy, xz, yz: (input coordinate along the columns, input coordinate along the rows)."""


def _triplane(resolutions=(5, 7), features=3, combine="product", seed=0,
              dtype=torch.float64) -> TriPlane:
    """A tri-plane with O(1) random planes of both signs, so tolerances mean something."""
    torch.manual_seed(seed)
    tp = TriPlane(TriPlaneConfig(resolutions=resolutions, features=features, combine=combine))
    with torch.no_grad():
        for planes in tp.planes:
            planes.uniform_(-1.0, 1.0)
    return tp.to(dtype)


def _bilinear(plane: np.ndarray, a: float, b: float) -> np.ndarray:
    """plane [F, R, R] at column coordinate a, row coordinate b in [0, 1] -> [F].

    align_corners=True: texel (row i, column j) sits at (a, b) = (j, i) / (R - 1).
    """
    R = plane.shape[-1]
    out = np.zeros(plane.shape[0])
    ua, ub = min(max(a, 0.0), 1.0) * (R - 1), min(max(b, 0.0), 1.0) * (R - 1)
    j0, i0 = min(math.floor(ua), R - 2), min(math.floor(ub), R - 2)   # 1 stays in the last cell
    wa, wb = ua - j0, ub - i0
    for di, w_row in ((0, 1 - wb), (1, wb)):
        for dj, w_col in ((0, 1 - wa), (1, wa)):
            out += w_row * w_col * plane[:, i0 + di, j0 + dj]
    return out


def _reference(tp: TriPlane, x: torch.Tensor) -> np.ndarray:
    """Per-point, per-scale, per-plane loop: x [N, 3] -> [N, out_dim] (float64 numpy)."""
    combine = tp.config.combine
    rows = []
    for p in x.double().tolist():
        feats = []
        for planes in tp.planes:
            planes = planes.detach().double().numpy()                # [3, F, R, R]
            per_plane = [_bilinear(planes[k], p[ca], p[cb])
                         for k, (ca, cb) in enumerate(AXES)]
            if combine == "product":
                feats.append(per_plane[0] * per_plane[1] * per_plane[2])
            elif combine == "sum":
                feats.append(per_plane[0] + per_plane[1] + per_plane[2])
            else:
                feats.extend(per_plane)
        rows.append(np.concatenate(feats))
    return np.stack(rows)


def _points(resolutions, n: int = 40, seed: int = 1) -> torch.Tensor:
    """Random points, points exactly on texel centres of each scale, the borders 0 and 1."""
    g = torch.Generator().manual_seed(seed)
    pts = [torch.rand(n, 3, generator=g, dtype=torch.float64)]
    for r in resolutions:
        pts.append(torch.randint(0, r, (10, 3), generator=g).double() / (r - 1))
    pts.append(torch.tensor([[0.0, 0, 0], [1, 1, 1], [0, 1, 0.5], [1, 0, 1],
                             [0.5, 1.0, 0.0], [0.3, 0.0, 1.0]], dtype=torch.float64))
    return torch.cat(pts)


@pytest.mark.parametrize("combine", MODES)
@pytest.mark.parametrize("resolutions", [(5, 9), (2, 7, 16)])
def test_matches_bilinear_reference(combine, resolutions):
    tp = _triplane(resolutions, combine=combine)
    x = _points(resolutions)
    out = tp(x)
    assert out.shape == (x.shape[0], tp.out_dim) and out.dtype == torch.float64
    np.testing.assert_allclose(out.detach().numpy(), _reference(tp, x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("combine", MODES)
def test_float32_matches_reference(combine):
    tp = _triplane((8, 33), combine=combine, dtype=torch.float32)
    x = _points((8, 33)).float()
    out = tp(x)
    assert out.dtype == torch.float32
    # float32 grid coordinates: ~R * 6e-8 error in the texel position, texel slopes <= 2
    np.testing.assert_allclose(out.detach().double().numpy(), _reference(tp, x), rtol=0,
                               atol=2e-5)


def test_exact_at_texel_centres():
    """On a texel centre the lookup is that texel, for every plane (a power-of-two R - 1)."""
    tp = _triplane((9,), features=2, combine="concat")
    i = torch.tensor([[0, 0, 0], [8, 8, 8], [3, 5, 7], [8, 0, 2]])
    out = tp(i.double() / 8).view(-1, 3, 2)                           # [N, plane, F]
    planes = tp.planes[0].detach()
    for k, (ca, cb) in enumerate(AXES):
        expected = planes[k][:, i[:, cb], i[:, ca]].t()               # row <- b, column <- a
        torch.testing.assert_close(out[:, k], expected, atol=1e-14, rtol=0)


def _hand_triplane(combine: str) -> TriPlane:
    """R = 2, F = 1, every plane linear in (a, b): xy 1 + a + 2b, xz 10 + 10a + 20b,
    yz -1 + 2a + 2b (a = column coordinate, b = row coordinate)."""
    tp = TriPlane(TriPlaneConfig(resolutions=(2,), features=1, combine=combine))
    with torch.no_grad():
        tp.planes[0].copy_(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]],
                                         [[[10.0, 20.0], [30.0, 40.0]]],
                                         [[[-1.0, 1.0], [1.0, 3.0]]]]))
    return tp


def test_hand_worked_values():
    """x = (0.25, 0.75, 0.5): xy at (a, b) = (0.25, 0.75): 0.75*0.25*1 + 0.25*0.25*2
    + 0.75*0.75*3 + 0.25*0.75*4 = 2.75; xz at (0.25, 0.5): 22.5; yz at (0.75, 0.5): 1.5."""
    x = torch.tensor([[0.25, 0.75, 0.5]])
    torch.testing.assert_close(_hand_triplane("concat")(x), torch.tensor([[2.75, 22.5, 1.5]]),
                               atol=0, rtol=0)
    torch.testing.assert_close(_hand_triplane("sum")(x), torch.tensor([[26.75]]), atol=0, rtol=0)
    torch.testing.assert_close(_hand_triplane("product")(x), torch.tensor([[92.8125]]),
                               atol=0, rtol=0)
    # the corners of the unit square are the texels themselves; outside [0, 1] is clamped
    concat = _hand_triplane("concat")
    torch.testing.assert_close(concat(torch.tensor([[1.0, 0.0, 1.0]])),
                               torch.tensor([[2.0, 40.0, 1.0]]), atol=0, rtol=0)
    torch.testing.assert_close(concat(torch.tensor([[1.5, -0.25, 0.5]])),
                               concat(torch.tensor([[1.0, 0.0, 0.5]])), atol=0, rtol=0)


@pytest.mark.parametrize("combine", MODES)
def test_gradcheck_planes_and_points(combine):
    tp = _triplane((3, 4), features=2, combine=combine)
    g = torch.Generator().manual_seed(3)
    x = (0.05 + 0.9 * torch.rand(6, 3, generator=g, dtype=torch.float64)).requires_grad_(True)
    names = [name for name, _ in tp.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in tp.parameters()]

    def f(x, *planes):
        return torch.func.functional_call(tp, dict(zip(names, planes)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-7)


def test_out_dim_and_layout():
    c = TriPlaneConfig()
    assert c.resolutions == (32, 64, 128, 256) and c.features == 16 and c.combine == "product"
    for combine, out_dim in [("product", 64), ("sum", 64), ("concat", 192)]:
        tp = TriPlane(TriPlaneConfig(combine=combine))
        assert tp.out_dim == out_dim
        assert [tuple(p.shape) for p in tp.planes] == [(3, 16, r, r) for r in c.resolutions]
        assert tp(torch.rand(5, 3)).shape == (5, out_dim)
    tp = TriPlane(TriPlaneConfig(resolutions=(4,), features=2))
    assert tp(torch.rand(0, 3)).shape == (0, 2)
    assert set(tp.state_dict()) == {"planes.0"} and PLANE_AXES == AXES


def test_invalid_config_raises():
    with pytest.raises(ValueError, match="combine must be one of product, sum, concat, not 'max'"):
        TriPlaneConfig(combine="max")
    c = TriPlaneConfig()
    c.combine = "mean"                                              # bypassing __post_init__
    with pytest.raises(ValueError, match="product, sum, concat"):
        TriPlane(c)
    with pytest.raises(ValueError, match="resolutions"):
        TriPlaneConfig(resolutions=(16, 1))
    with pytest.raises(ValueError, match="resolutions"):
        TriPlaneConfig(resolutions=())
    with pytest.raises(ValueError, match="features"):
        TriPlaneConfig(features=0)
    with pytest.raises(ValueError, match="init_low"):
        TriPlaneConfig(init_low=0.5, init_high=0.1)


def test_config_json_round_trip():
    c = TriPlaneConfig(resolutions=(8, 16), combine="sum", init_low=-0.01)
    back = TriPlaneConfig(**json.loads(json.dumps(dataclasses.asdict(c))))
    assert back == c and back.resolutions == (8, 16)


def test_initialisation():
    torch.manual_seed(0)
    tp = TriPlane(TriPlaneConfig())                                  # product: U(0.1, 0.5)
    for planes in tp.planes:
        assert planes.min() >= 0.1 and planes.max() <= 0.5
    feats = tp(torch.rand(1000, 3))
    assert feats.abs().mean() > 1e-3 and feats.min() > 0.1**3 - 1e-7
    for combine in ("sum", "concat"):                                # U(-0.1, 0.1)
        tp = TriPlane(TriPlaneConfig(resolutions=(16,), combine=combine))
        assert tp.planes[0].abs().max() <= 0.1 and tp.planes[0].min() < 0 < tp.planes[0].max()
    tp = TriPlane(TriPlaneConfig(resolutions=(16,), init_low=1.0, init_high=1.0))
    assert torch.equal(tp.planes[0], torch.ones(3, 16, 16, 16))


def _tv_reference(tp: TriPlane) -> float:
    per = []
    for planes in tp.planes:
        for plane in planes.detach().double().numpy():              # [F, R, R]
            F_, R, _ = plane.shape
            rows = sum((plane[f, i + 1, j] - plane[f, i, j]) ** 2
                       for f in range(F_) for i in range(R - 1) for j in range(R))
            cols = sum((plane[f, i, j + 1] - plane[f, i, j]) ** 2
                       for f in range(F_) for i in range(R) for j in range(R - 1))
            per.append(rows / (F_ * (R - 1) * R) + cols / (F_ * R * (R - 1)))
    return sum(per) / len(per)


def test_total_variation():
    # hand: xy [[1, 2], [3, 4]]: rows (3-1)^2, (4-2)^2 -> 4, columns 1, 1 -> 1: 5;
    # xz 10x that: 500; yz [[-1, 1], [1, 3]]: 4 + 4 = 8. Mean over planes: 513 / 3 = 171.
    tv = _hand_triplane("product").total_variation()
    assert tv.shape == () and tv.item() == pytest.approx(171.0, abs=1e-5)
    tp = _triplane((3, 5), features=2)
    assert tp.total_variation().item() == pytest.approx(_tv_reference(tp), rel=1e-12)
    with torch.no_grad():
        for planes in tp.planes:
            planes.fill_(0.7)
    assert tp.total_variation().item() == 0.0
    with torch.no_grad():
        tp.planes[1][2, 1, 3, 4] += 0.1
    assert tp.total_variation().item() > 0
    tp.total_variation().backward()
    assert tp.planes[1].grad.abs().sum() > 0


def test_l1():
    # hand: |texels| sum to 10 (xy), 100 (xz), 1 + 1 + 1 + 3 = 6 (yz); 12 texels in the scale
    assert _hand_triplane("sum").l1().item() == pytest.approx(116 / 12, abs=1e-5)
    tp = _triplane((3, 5), features=2)
    expected = np.mean([np.abs(p.detach().numpy()).mean() for p in tp.planes])
    assert tp.l1().item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_total_variation_matches_autograd_twin(dtype):
    """plane_tv (closed-form gradient) against plane_tv_reference (autograd): value and the
    gradient of every scale under a random upstream scalar, on scales of 2, 5 and 16 texels a side."""
    from fieldkit.encoders.plane_tv import plane_tv, plane_tv_reference

    tp = _triplane((2, 5, 16), features=3, dtype=dtype, seed=3)
    up = torch.tensor(0.37, dtype=dtype)
    grads = []
    for fn in (plane_tv, plane_tv_reference):
        tp.zero_grad(set_to_none=True)
        value = fn(list(tp.planes))
        (value * up).backward()
        grads.append((value.detach(), [p.grad.clone() for p in tp.planes]))
    (v, g), (v_ref, g_ref) = grads
    # float32: the two sum ~10^3 squared differences in another order (rounding only)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert v.dtype == dtype and v.item() == pytest.approx(v_ref.item(), rel=tol)
    for a, b in zip(g, g_ref):
        assert a.dtype == dtype and a.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * b.abs().max().item())


def test_total_variation_without_grad_and_bf16():
    from fieldkit.encoders.plane_tv import plane_tv, plane_tv_reference

    tp = _triplane((4, 8), features=2, dtype=torch.float32, seed=1)
    with torch.no_grad():
        assert plane_tv(list(tp.planes)).item() == pytest.approx(
            plane_tv_reference(list(tp.planes)).item(), rel=1e-5)
    planes = [p.detach().bfloat16().requires_grad_(True) for p in tp.planes]
    value = plane_tv(planes)
    value.backward()
    assert value.dtype == torch.bfloat16 and all(p.grad.dtype == torch.bfloat16 for p in planes)
    assert value.item() == pytest.approx(plane_tv_reference(
        [p.detach().float() for p in planes]).item(), rel=1e-2)
