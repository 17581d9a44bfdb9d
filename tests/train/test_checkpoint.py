"""Checkpoints: exact resume, corrupt files, crash mid-swap, no pickle."""
from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from fieldkit.errors import FieldkitError
from fieldkit.train import checkpoint as ck


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 2))


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    """Steps on random batches drawn from the default generator (so RNG state matters)."""
    for _ in range(steps):
        x = torch.randn(8, 3)
        y = torch.randn(8, 2)
        loss = ((model(x) - y) ** 2).mean() + 0.01 * model[0].weight.abs().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _opt(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.8, 0.99))


def test_atomic_writes(tmp_path):
    path = tmp_path / "sub" / "a.json"
    ck.atomic_write_json(path, {"x": [1, 2]})
    assert json.loads(path.read_text()) == {"x": [1, 2]}
    assert "\n  " in path.read_text()  # indent=2
    ck.atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]  # no temp files left


def test_tensors_round_trip(tmp_path):
    w = torch.arange(12.0).reshape(3, 4)
    tensors = {"w": w.T, "tied": w, "i": torch.tensor([1, 2], dtype=torch.int64),
               "s": torch.tensor(3.5)}
    ck.save_tensors(tmp_path / "t.safetensors", tensors, {"note": "hi"})
    back = ck.load_tensors(tmp_path / "t.safetensors")
    assert back.keys() == tensors.keys()
    for k in tensors:
        assert torch.equal(back[k], tensors[k]) and back[k].dtype == tensors[k].dtype
    assert ck.read_metadata(tmp_path / "t.safetensors") == {"note": "hi"}


def test_resume_is_bit_identical(tmp_path):
    torch.manual_seed(123)
    model = _model(0)
    opt = _opt(model)
    _train(model, opt, 3)
    grid = torch.rand(4, 4, 4)
    ck.save_checkpoint(tmp_path, 3, model.state_dict(), opt.state_dict(),
                       {"grid": grid}, {"config": {"lr": 1e-2}, "psnr": [20.5]})
    _train(model, opt, 2)  # the uninterrupted run
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    torch.manual_seed(999)  # a different process: different RNG and init
    fresh = _model(7)
    fresh_opt = _opt(fresh)
    step, model_state, opt_state, extra_t, extra_j = ck.load_checkpoint(tmp_path)
    assert step == 3
    assert torch.equal(extra_t["grid"], grid)
    assert extra_j == {"config": {"lr": 1e-2}, "psnr": [20.5]}
    assert opt_state["param_groups"][0]["betas"] == (0.8, 0.99)
    assert set(opt_state["state"]) == {0, 1, 2, 3}
    fresh.load_state_dict(model_state)
    fresh_opt.load_state_dict(opt_state)
    _train(fresh, fresh_opt, 2)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, expected[k]), k


def test_only_safetensors_and_json(tmp_path):
    model = _model(0)
    opt = _opt(model)
    _train(model, opt, 1)
    for step in (1, 2):  # the second save swaps over the first
        ck.save_checkpoint(tmp_path, step, model.state_dict(), opt.state_dict(), {}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    files = sorted(p.name for p in (tmp_path / "checkpoint").iterdir())
    assert files == ["model.safetensors", "optimizer.safetensors", "state.json",
                     "state.safetensors"]
    assert all(f.endswith((".safetensors", ".json")) for f in files)
    keys = ck.load_tensors(tmp_path / "checkpoint" / "optimizer.safetensors").keys()
    assert "state.0.exp_avg" in keys and "state.0.step" in keys
    assert ck.load_checkpoint(tmp_path)[0] == 2


def test_corrupt_model_file(tmp_path):
    model = _model(0)
    ck.save_checkpoint(tmp_path, 5, model.state_dict(), _opt(model).state_dict(), {}, {})
    bad = tmp_path / "checkpoint" / "model.safetensors"
    bad.write_bytes(b"\x00\x01 not safetensors at all")
    with pytest.raises(FieldkitError) as info:
        ck.load_checkpoint(tmp_path)
    msg = str(info.value)
    assert "\n" not in msg and str(bad) in msg and "not a valid safetensors file" in msg
    bad.unlink()
    with pytest.raises(FieldkitError, match="model.safetensors is missing"):
        ck.load_checkpoint(tmp_path)


def test_truncated_file(tmp_path):
    ck.save_tensors(tmp_path / "t.safetensors", {"a": torch.randn(100)})
    data = (tmp_path / "t.safetensors").read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(FieldkitError, match="not a valid safetensors file"):
        ck.load_tensors(tmp_path / "t.safetensors")


def test_crash_between_renames_still_loads(tmp_path):
    model = _model(0)
    opt = _opt(model)
    ck.save_checkpoint(tmp_path, 10, model.state_dict(), opt.state_dict(), {}, {"a": 1})
    # Simulate a crash after "checkpoint -> checkpoint.old" and before "tmp -> checkpoint".
    os.replace(tmp_path / "checkpoint", tmp_path / "checkpoint.old")
    (tmp_path / "checkpoint.tmp-dead").mkdir()
    (tmp_path / "checkpoint.tmp-dead" / "model.safetensors").write_bytes(b"half")
    step, state, _, _, extra = ck.load_checkpoint(tmp_path)
    assert step == 10 and extra == {"a": 1}
    assert torch.equal(state["0.weight"], model.state_dict()["0.weight"])
    # The next save recovers: one clean checkpoint, no leftovers.
    ck.save_checkpoint(tmp_path, 11, model.state_dict(), opt.state_dict(), {}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    assert ck.load_checkpoint(tmp_path)[0] == 11


def test_no_checkpoint(tmp_path):
    with pytest.raises(FieldkitError, match="no checkpoint"):
        ck.load_checkpoint(tmp_path)


def test_corrupt_state_json(tmp_path):
    model = _model(0)
    ck.save_checkpoint(tmp_path, 1, model.state_dict(), _opt(model).state_dict(), {}, {})
    (tmp_path / "checkpoint" / "state.json").write_text("{nope")
    with pytest.raises(FieldkitError, match="state.json is corrupt"):
        ck.load_checkpoint(tmp_path)


def test_rng_helpers():
    state = ck.rng_state()
    assert state.dtype == torch.uint8
    a = torch.rand(5)
    ck.set_rng_state(state)
    assert torch.equal(torch.rand(5), a)
