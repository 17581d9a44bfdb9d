import torch

from fieldkit.data.distortion import _distort_with_jacobian, distort, undistort

FOX_LIKE = torch.tensor([0.0578421, -0.0805099, 0.0, 0.0, -0.000980296, 0.00015575],
                        dtype=torch.float64)
STRONG = torch.tensor([-0.3, 0.12, -0.02, 0.004, 0.002, -0.003], dtype=torch.float64)


def _grid(extent: float) -> torch.Tensor:
    g = torch.linspace(-extent, extent, 41, dtype=torch.float64)
    return torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)


def test_undistort_inverts_distort_to_far_below_a_pixel():
    for params, extent in ((FOX_LIKE, 0.75), (STRONG, 0.6)):
        xy = _grid(extent)
        back = undistort(distort(xy, params), params)
        # 1e-9 in normalised units is ~1e-6 px at a 1000 px focal length.
        assert (back - xy).abs().max() < 1e-9


def test_zero_distortion_is_identity():
    xy = _grid(1.0)
    assert torch.equal(distort(xy, torch.zeros(6, dtype=torch.float64)), xy)


def test_jacobian_matches_autograd():
    xy = _grid(0.7)[::37].clone().requires_grad_(True)
    _, jac = _distort_with_jacobian(xy, STRONG)
    for i in range(len(xy)):
        auto = torch.autograd.functional.jacobian(lambda p: distort(p, STRONG), xy[i].detach())
        assert torch.allclose(jac[i], auto, atol=1e-12)


def test_float32_input_keeps_dtype_and_precision():
    xy = _grid(0.7).float()
    out = undistort(distort(xy, FOX_LIKE.float()), FOX_LIKE.float())
    assert out.dtype == torch.float32
    assert (out - xy).abs().max() < 1e-6
