"""Model files store occupancy grids compactly (bits, float16 EMA) and load back the model."""
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from fieldkit.errors import FieldkitError
from fieldkit.fields.compact import HALF, PACKED, pack_bits, unpack_bits
from fieldkit.fields.registry import (MODEL_FILE, build_model, load_model_file, merge,
                                      preset_config, save_model)
from fieldkit.train.checkpoint import save_tensors


@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (8,), (9,), (3, 5, 7), (2, 4, 4, 4)])
def test_bits_round_trip_and_match_numpy_packbits(shape):
    g = torch.Generator().manual_seed(sum(shape))
    mask = torch.rand(shape, generator=g) > 0.5
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (mask.numel() + 7) // 8
    assert np.array_equal(packed.numpy(), np.packbits(mask.numpy().reshape(-1)))
    assert torch.equal(unpack_bits(packed, shape), mask)


def test_unpack_refuses_a_byte_count_that_does_not_fit_the_shape():
    with pytest.raises(ValueError, match="cannot hold"):
        unpack_bits(torch.zeros(3, dtype=torch.uint8), (4, 4, 4))


def _trained_grid(kind: str, **render):
    torch.manual_seed(0)
    model = build_model(kind, 1.0, "default", config=merge(preset_config(kind), {"render": render}))
    grid = model.grid
    g = torch.Generator().manual_seed(1)
    density = torch.rand(grid.num_cells, generator=g) ** 4 * 30   # a long tail, like an EMA
    grid.density.copy_(density)
    grid.binary.copy_((density > 0.5).reshape(grid.binary.shape))
    return model


@pytest.mark.parametrize("kind,render", [("mlp", {}), ("hashgrid", {"cascades": 2}),
                                         ("triplane", {})])
def test_model_file_packs_the_grid_and_loads_it_back(tmp_path, kind, render):
    model = _trained_grid(kind, **render)
    path = save_model(model, tmp_path)
    grid_bytes = model.grid.density.numel() * 4 + model.grid.binary.numel()
    params_bytes = sum(p.numel() * 4 for p in model.parameters())
    # the grid now costs 2 bytes + 1 bit a cell instead of 5 bytes
    assert path.stat().st_size < params_bytes + grid_bytes * (2 + 1 / 8) / 5 + 64 * 1024
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        assert f.get_tensor("grid.binary").dtype == torch.uint8
        assert f.get_tensor("grid.density").dtype == torch.float16
    assert json.loads(meta[PACKED]) == {"grid.binary": list(model.grid.binary.shape)}
    assert json.loads(meta[HALF]) == ["grid.density"]

    loaded = load_model_file(path)
    assert torch.equal(loaded.grid.binary, model.grid.binary)
    assert loaded.grid.density.dtype == torch.float32
    torch.testing.assert_close(loaded.grid.density, model.grid.density, rtol=1e-3, atol=1e-6)
    for (name, a), b in zip(model.named_parameters(), loaded.parameters()):
        assert torch.equal(a, b), name


def test_the_mlp_file_is_about_half_its_former_size(tmp_path):
    model = _trained_grid("mlp")
    verbatim = tmp_path / "verbatim.safetensors"
    save_tensors(verbatim, model.state_dict())
    compact = save_model(model, tmp_path)
    assert compact.stat().st_size < 0.55 * verbatim.stat().st_size


def test_a_model_file_written_verbatim_still_loads(tmp_path):
    """Files from before the compact layout (no packed/half metadata) load unchanged."""
    model = _trained_grid("hashgrid")
    from dataclasses import asdict
    save_tensors(tmp_path / MODEL_FILE, model.state_dict(), metadata={
        "kind": "hashgrid", "config": json.dumps(asdict(model.config))})
    loaded = load_model_file(tmp_path / MODEL_FILE)
    assert torch.equal(loaded.grid.binary, model.grid.binary)
    assert torch.equal(loaded.grid.density, model.grid.density)


def test_a_damaged_layout_is_a_one_line_error(tmp_path):
    model = _trained_grid("mlp")
    tensors = dict(model.state_dict())
    tensors["grid.binary"] = pack_bits(model.grid.binary)[:-1]   # a byte short
    from dataclasses import asdict
    save_tensors(tmp_path / MODEL_FILE, tensors, metadata={
        "kind": "mlp", "config": json.dumps(asdict(model.config)),
        PACKED: json.dumps({"grid.binary": list(model.grid.binary.shape)}), HALF: "[]"})
    with pytest.raises(FieldkitError, match="damaged model file") as err:
        load_model_file(tmp_path / MODEL_FILE)
    assert "\n" not in str(err.value) and MODEL_FILE in str(err.value)


@pytest.mark.parametrize("kind", ["hashgrid", "splat"])
def test_float16_weights_halve_the_file_and_load_as_rounded_float32(tmp_path, kind):
    torch.manual_seed(0)
    model = build_model(kind, 1.0, "default")
    if kind == "splat":   # a fresh splat model has no Gaussians yet
        model.set_gaussians({n: torch.zeros(100, *p.shape[1:])
                             for n, p in model.params.items()})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)   # values float16 must round
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    full = save_model(model, tmp_path / "a")
    half = save_model(model, tmp_path / "b", weights="float16")
    if kind == "hashgrid":   # the hash table is nearly all of the file
        assert half.stat().st_size < 0.55 * full.stat().st_size
    loaded = load_model_file(half)
    changed = 0
    for (name, p), q in zip(model.named_parameters(), loaded.parameters()):
        assert q.dtype == torch.float32, name
        assert torch.equal(q, p.detach().half().float()), name
        changed += int(not torch.equal(q, p))
    assert changed > 0   # the file did hold float16
    for name, b in model.named_buffers():   # boxes and grids are not weights: as before
        assert torch.equal(dict(loaded.named_buffers())[name], b), name


def test_unknown_weights_precision_is_refused(tmp_path):
    with pytest.raises(ValueError, match="float32 or float16"):
        save_model(build_model("mlp", 1.0, "default"), tmp_path, weights="int8")


def test_a_run_saved_with_float16_weights_keeps_a_float32_checkpoint(tmp_path):
    from fieldkit.train.checkpoint import load_tensors
    from fieldkit.train.config import TrainConfig
    from fieldkit.train.run import train
    from tests.conftest import DEMO_SCENE

    run = train(DEMO_SCENE, "triplane", tmp_path / "run", TrainConfig(
        max_steps=5, eval_every=0, checkpoint_every=1e9, weights="float16"), downscale=4,
        preset="fast").run_dir
    with safe_open(str(run / MODEL_FILE), framework="pt") as f:
        assert f.get_tensor("field.encoder.planes.0").dtype == torch.float16
    ckpt = load_tensors(run / "checkpoint" / MODEL_FILE)
    assert ckpt["field.encoder.planes.0"].dtype == torch.float32
    assert json.loads((run / "config.json").read_text())["train"]["weights"] == "float16"
