"""Mixed precision of the decoder MLPs (``DecoderConfig.precision``): bf16 autocast against
float32 on the same weights, gradients, bit-identity of fp32/auto on the CPU, the config's
(de)serialisation and the errors for values that are not offered."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from fieldkit.encoders.sh import sh_encode
from fieldkit.errors import FieldkitError
from fieldkit.fields import radiance
from fieldkit.fields.activations import trunc_exp
from fieldkit.fields.radiance import autocast_dtype
from fieldkit.fields.registry import (build_model, config_from_dict, load_model_file, merge,
                                      model_class, model_from_config, save_model)
from tests.conftest import DEMO_SCENE

KINDS = ("hashgrid", "triplane", "mlp")
SMALL = {  # small encoders: the tests are about the decoders
    "hashgrid": {"encoder": {"num_levels": 4, "log2_table_size": 12, "max_resolution": 64}},
    "triplane": {"encoder": {"resolutions": (16, 32), "features": 4}},
    "mlp": {"encoder": {"num_frequencies": 6}},
}

U = 2.0 ** -8
"""Unit roundoff of bfloat16 (8 significant bits): every rounding to bf16 is off by at most
this fraction of the value."""


def _model(kind: str, precision: str = "auto", seed: int = 0):
    """A small model of ``kind`` whose field is far from its near-zero initial outputs: encoder
    values ~N(0, 1) and He-initialised linear layers, so that hidden activations, density
    logits and colour logits are O(1) as in a trained field (an untrained field's outputs are so
    close to constant that any tolerance would pass)."""
    torch.manual_seed(seed)
    cls = model_class(kind)
    config = merge(cls.config_class(), {**SMALL[kind], "decoder": {"precision": precision}})
    model = build_model(kind, 1.0, config=config)
    with torch.no_grad():
        for p in model.field.encoder.parameters():
            p.normal_(0.0, 1.0)
        for m in model.field.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.normal_(0.0, math.sqrt(2.0 / m.in_features))
    return model


def _twin(model, precision: str):
    """The same weights under another precision."""
    other = type(model)(merge(model.config, {"decoder": {"precision": precision}}))
    other.load_state_dict(model.state_dict())
    return other


def _inputs(n: int = 1 << 13, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(n, 3, generator=g) * 1.9 - 0.95          # inside the bound
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return points, dirs


def _old_forward(field, points, dirs):
    """RadianceField.forward as it was before precision existed (plain float32)."""
    h = field.density_net(field.encoder(field._unit(points)))
    sigma = trunc_exp(h[:, 0] - 1.0)
    inside = (points.abs() <= field.bound).all(dim=-1)
    h = torch.cat([sh_encode(dirs, field.config.sh_degree), h[:, 1:]], dim=-1)
    return torch.sigmoid(field.color_net(h)), sigma * inside


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_on_cpu_is_close_to_fp32_with_the_same_weights(kind):
    ref = _model(kind, "fp32")
    bf16 = _twin(ref, "bf16")
    points, dirs = _inputs()
    linear_dtypes = set()
    hooks = [m.register_forward_hook(lambda m, i, o: linear_dtypes.add(o.dtype))
             for m in bf16.field.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        rgb0, sigma0 = ref.field(points, dirs)
        rgb1, sigma1 = bf16.field(points, dirs)
    for h in hooks:
        h.remove()
    assert linear_dtypes == {torch.bfloat16}            # the MLPs really ran in bf16 ...
    assert rgb1.dtype == sigma1.dtype == torch.float32  # ... and the outputs are float32
    assert not torch.equal(rgb0, rgb1)
    # Tolerance. bf16 keeps 8 significant bits (U = 2^-8 = 0.4%). Each layer rounds its inputs
    # and weights to bf16 (products accumulate in float32) and its output back to bf16, so a
    # logit is off by a few U of the SUM OF MAGNITUDES |w_i x_i| that forms it - not of the
    # logit itself, which may cancel to near zero - and the errors of 2-5 layers add up.
    # With O(1) activations that is ~0.01-0.02 at worst over 8k samples (measured here: 0.019-
    # 0.021 = 5 U for the density logit, 0.005-0.008 = 2 U for rgb; 0.001-0.0034 and
    # 0.0004-0.0009 on average). The bounds leave 2-4x headroom:
    # - density: sigma = exp(logit - 1), so |log sigma_bf16 - log sigma_fp32| is the logit's
    #   error: at most 16 U = 0.0625 (sigma within 6.5%), 2 U = 0.008 on average;
    # - rgb = sigmoid(logit) changes by at most 1/4 of the logit's error, and the colour MLP sits
    #   behind the density MLP's bf16 geometry features: at most 8 U = 0.031 (8/255),
    #   U = 0.004 (1/255) on average.
    dlog = (sigma1.log() - sigma0.log()).abs()
    drgb = (rgb1 - rgb0).abs()
    assert float(dlog.max()) <= 16 * U and float(dlog.mean()) <= 2 * U
    assert float(drgb.max()) <= 8 * U and float(drgb.mean()) <= U


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_gradients_reach_every_parameter_in_float32(kind):
    model = _model(kind, "bf16")
    points, dirs = _inputs(1 << 11)
    rgb, sigma = model.field(points, dirs)
    (rgb.sum() + 1e-2 * sigma.sum()).backward()
    for name, p in model.field.named_parameters():
        assert p.dtype == torch.float32, name
        assert p.grad is not None and p.grad.dtype == torch.float32, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_fp32_and_auto_on_cpu_are_bit_identical_to_the_plain_float32_field(kind, precision,
                                                                           monkeypatch):
    if kind == "mlp":  # auto would pick bf16 for the 128-wide MLP on a bf16 CPU
        monkeypatch.setattr(radiance, "_cpu_bf16", lambda: False)
    model = _model(kind, precision)
    points, dirs = _inputs(1 << 11)
    rgb, sigma = model.field(points, dirs)
    (rgb.sum() + 1e-2 * sigma.sum()).backward()
    grads = [p.grad.clone() for p in model.field.parameters()]
    model.field.zero_grad(set_to_none=True)
    rgb0, sigma0 = _old_forward(model.field, points, dirs)
    (rgb0.sum() + 1e-2 * sigma0.sum()).backward()
    assert torch.equal(rgb, rgb0) and torch.equal(sigma, sigma0)
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.field.parameters()))
    assert torch.equal(model.density(points), sigma0.detach())


def test_auto_resolves_to_bf16_on_cuda_and_for_wide_mlps_on_bf16_cpus(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    wide, narrow = radiance.CPU_BF16_MIN_WIDTH, radiance.CPU_BF16_MIN_WIDTH // 2
    monkeypatch.setattr(radiance, "_cpu_bf16", lambda: True)          # avx512_bf16 or AMX
    assert autocast_dtype("auto", cpu, wide) is torch.bfloat16
    assert autocast_dtype("auto", cpu, narrow) is None
    assert autocast_dtype("fp32", cpu, wide) is None
    monkeypatch.setattr(radiance, "_cpu_bf16", lambda: False)         # no bf16 products
    assert autocast_dtype("auto", cpu, wide) is None
    assert autocast_dtype("fp32", cpu) is None and autocast_dtype("fp32", cuda) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    assert _model("mlp").field.config.hidden_dim >= wide  # the MLP model is the wide one
    assert build_model("hashgrid", 1.0).field.config.hidden_dim < wide
    monkeypatch.setattr(radiance, "_cuda_bf16", lambda index: True)    # Ampere or newer
    assert autocast_dtype("auto", cuda) is torch.bfloat16
    monkeypatch.setattr(radiance, "_cuda_bf16", lambda index: False)   # older GPUs
    assert autocast_dtype("auto", cuda) is None


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_on_cpu_pads_batches_without_changing_rows_or_gradients(kind):
    """Under bf16 on the CPU the MLPs see batches padded to CPU_BF16_ROWS rows (so oneDNN
    reuses its kernels); a row's output and the gradients do not depend on the padding."""
    rows = radiance.CPU_BF16_ROWS
    model = _model(kind, "bf16")
    n, m = rows + rows // 2 - 3, 2 * rows           # n is padded to m
    points, dirs = _inputs(m)
    shapes = set()
    hooks = [lin.register_forward_hook(lambda mod, i, o: shapes.add(i[0].shape[0]))
             for lin in model.field.modules() if isinstance(lin, torch.nn.Linear)]
    rgb, sigma = model.field(points[:n], dirs[:n])
    for h in hooks:
        h.remove()
    assert shapes == {m} and rgb.shape == (n, 3) and sigma.shape == (n,)
    (rgb.sum() + 1e-2 * sigma.sum()).backward()
    grads = [p.grad.clone() for p in model.field.parameters()]
    model.field.zero_grad(set_to_none=True)
    rgb_m, sigma_m = model.field(points, dirs)      # the same shape, real rows in the pad
    # equal up to float32 rounding of the activations (a few 1e-8; bf16's own error is 4e-3)
    torch.testing.assert_close(rgb, rgb_m[:n], rtol=0, atol=1e-6)
    torch.testing.assert_close(sigma, sigma_m[:n], rtol=1e-6, atol=0)
    (rgb_m[:n].sum() + 1e-2 * sigma_m[:n].sum()).backward()
    for g, (name, p) in zip(grads, model.field.named_parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_precision_round_trips_through_config_from_dict(kind, tmp_path):
    cls = model_class(kind)
    config = merge(cls.config_class(), {**SMALL[kind], "decoder": {"precision": "bf16"}})
    as_json = json.loads(json.dumps(dataclasses.asdict(config)))
    assert as_json["decoder"]["precision"] == "bf16"
    back = config_from_dict(cls.config_class, as_json)
    assert back.decoder == config.decoder and back.decoder.precision == "bf16"
    # a config.json written before the field existed still loads, with the default
    del as_json["decoder"]["precision"]
    old = config_from_dict(cls.config_class, as_json)
    assert old.decoder.precision == "auto"
    assert model_from_config(kind, as_json).config.decoder.precision == "auto"
    # and a model file carries it
    model = _model(kind, "bf16")
    loaded = load_model_file(save_model(model, tmp_path))
    assert loaded.config.decoder.precision == "bf16"


@pytest.mark.parametrize("value, words", [("fp16", "use bf16"), ("half", "auto, fp32, bf16"),
                                          ("BF16", "auto, fp32, bf16")])
def test_a_precision_that_is_not_offered_is_one_clean_error(value, words):
    config = dataclasses.asdict(model_class("mlp").config_class())
    config["decoder"]["precision"] = value
    with pytest.raises(FieldkitError) as err:
        model_from_config("mlp", config)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_cli_reports_an_unsupported_precision_in_one_line(tmp_path, capsys):
    from fieldkit.cli import main

    code = main(["train", str(DEMO_SCENE), "--model", "mlp", "--mlp.decoder.precision", "fp16",
                 "--max-steps", "1", "--downscale", "4", "--out", str(tmp_path / "run"),
                 "--no-final-eval", "--no-video"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("error: decoder precision fp16") and "\n" not in err
    assert not (tmp_path / "run").exists()
