"""NeRF frequency encoding: exact values against the formula, layout, out_dim, options."""
from __future__ import annotations

import math

import pytest
import torch

from fieldkit.encoders.frequency import FrequencyConfig, FrequencyEncoder


def _formula(x: torch.Tensor, L: int, include_input: bool) -> torch.Tensor:
    """Per point and coordinate: p = 2x - 1, then (p,) + (sin(2^k pi p), cos(2^k pi p)) by k,
    laid out as [p (D), sin k=0 (D), cos k=0 (D), sin k=1 (D), ...]."""
    p = 2 * x - 1
    parts = [p] if include_input else []
    for k in range(L):
        parts += [torch.sin(2**k * math.pi * p), torch.cos(2**k * math.pi * p)]
    return torch.cat(parts, dim=-1)


def test_defaults_and_out_dim():
    enc = FrequencyEncoder()
    assert enc.config == FrequencyConfig(num_frequencies=10, include_input=True)
    assert enc.in_dim == 3 and enc.out_dim == 63 and not list(enc.parameters())
    assert FrequencyEncoder(FrequencyConfig(4, include_input=False)).out_dim == 24
    assert FrequencyEncoder(FrequencyConfig(4), in_dim=2).out_dim == 18
    assert FrequencyEncoder(FrequencyConfig(0)).out_dim == 3
    assert enc(torch.rand(7, 3)).shape == (7, 63)
    assert enc(torch.rand(2, 5, 3)).shape == (2, 5, 63)
    assert enc(torch.rand(0, 3)).shape == (0, 63)


@pytest.mark.parametrize("include_input", [True, False])
def test_matches_formula(include_input):
    x = torch.cat([torch.rand(20, 3, generator=torch.Generator().manual_seed(0),
                              dtype=torch.float64),
                   torch.tensor([[0.0, 0.5, 1.0], [0.25, 0.75, 0.125]], dtype=torch.float64)])
    enc = FrequencyEncoder(FrequencyConfig(6, include_input))
    out = enc(x)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, _formula(x, 6, include_input), atol=1e-12, rtol=0)
    # float32 in, float32 out; the argument 2^5 pi p rounds to ~1e-5 in float32
    out32 = enc(x.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), _formula(x, 6, include_input), atol=5e-5, rtol=0)


def test_hand_values():
    """x = 0.75 -> p = 0.5: sin(pi/2) = 1, cos(pi/2) = 0, sin(pi) = 0, cos(pi) = -1,
    sin(2 pi) = 0, cos(2 pi) = 1. x = 0 -> p = -1: sin = 0, cos(-2^k pi) = -1, 1, 1."""
    enc = FrequencyEncoder(FrequencyConfig(3), in_dim=1)
    out = enc(torch.tensor([[0.75], [0.0], [0.5]], dtype=torch.float64))
    expected = torch.tensor([[0.5, 1, 0, 0, -1, 0, 1],
                             [-1, 0, -1, 0, 1, 0, 1],
                             [0, 0, 1, 0, 1, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


def test_layout_is_frequency_then_sin_cos_then_coordinate():
    enc = FrequencyEncoder(FrequencyConfig(2, include_input=True), in_dim=3)
    x = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64)
    p = 2 * x[0] - 1
    out = enc(x)[0]
    torch.testing.assert_close(out[0:3], p)
    torch.testing.assert_close(out[3:6], torch.sin(math.pi * p))
    torch.testing.assert_close(out[6:9], torch.cos(math.pi * p))
    torch.testing.assert_close(out[9:12], torch.sin(2 * math.pi * p))
    torch.testing.assert_close(out[12:15], torch.cos(2 * math.pi * p))


def test_gradient_flows_to_input():
    enc = FrequencyEncoder(FrequencyConfig(3))
    x = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(enc, (x,))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="num_frequencies >= 1 or include_input=True"):
        FrequencyEncoder(FrequencyConfig(0, include_input=False))
    with pytest.raises(ValueError, match="num_frequencies must be >= 0"):
        FrequencyEncoder(FrequencyConfig(-1))
    with pytest.raises(ValueError, match="in_dim"):
        FrequencyEncoder(in_dim=0)
    with pytest.raises(ValueError, match=r"expected x \[\.\.\., 3\]"):
        FrequencyEncoder()(torch.rand(4, 2))
