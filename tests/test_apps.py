"""The benchmarks in apps/ still run against the library: they import, and the scoring path of
the distillation benchmarks (a student trained from scratch, scored on the photos) works on the
demo scene. Their long measurements themselves are not run here."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.conftest import DEMO_SCENE, REPO

APPS = sorted((REPO / "apps").glob("*.py"))


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"fieldkit_apps_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))   # the scripts import each other by name
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def test_apps_are_found():
    assert len(APPS) >= 20, APPS


@pytest.mark.parametrize("path", APPS, ids=lambda p: p.name)
def test_app_imports(path):
    """Every benchmark imports: no name it takes from fieldkit has gone."""
    _load(path)


def test_bench_distill_scratch_scores_on_the_photos(tmp_path):
    """``bench_distill.scratch`` trains from the photos and scores on test views."""
    bench = _load(REPO / "apps" / "bench_distill.py")
    out = bench.scratch(DEMO_SCENE, "mlp", 2.0, tmp_path / "run", 2, 2)
    assert out["steps"] > 0
    assert 5 < out["psnr"] < 60 and 0 < out["ssim"] <= 1


def test_sweep_distill_scratch_row(tmp_path, monkeypatch):
    """``sweep_distill.py NAME --scratch KIND`` appends a scored row."""
    sweep = _load(REPO / "apps" / "sweep_distill.py")
    results = tmp_path / "rows.jsonl"
    monkeypatch.setattr(sys, "argv", [
        "sweep_distill.py", "s", "--scratch", "triplane", "train.max_steps=30",
        "--scene", str(DEMO_SCENE), "--runs", str(tmp_path / "runs"),
        "--results", str(results)])
    sweep.main()
    row = json.loads(results.read_text().splitlines()[-1])
    assert row["name"] == "s" and row["kind"] == "triplane" and row["steps"] == 30
    assert 5 < row["student"] < 60


def test_stamp_names_the_machine_and_the_exact_command(monkeypatch):
    """Every benchmark's results say where, when and how they ran (``apps/stamp.py``)."""
    stamp = _load(REPO / "apps" / "stamp.py")
    monkeypatch.setattr(sys, "argv", [str(REPO / "apps" / "bench_distill.py"), "--out", "a b"])
    s = stamp.stamp()
    assert s["command"] == "python apps/bench_distill.py --out 'a b'"
    assert "threads, torch " in s["machine"] and s["date"][:2] == "20"
