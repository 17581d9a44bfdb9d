"""Shared test fixtures: the real scenes in ../shared/scenes and the built-in demo scene."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_SCENES = REPO.parent / "shared" / "scenes"
DEMO_SCENE = REPO / "scenes" / "demo"

os.environ.setdefault("FIELDKIT_QUIET", "1")
# CPU inference compilation of hash grids (10-30 s per process and grid layout) is tested by
# tests/encoders/test_hashgrid_infer_compile.py; elsewhere the suite renders eagerly.
os.environ.setdefault("FIELDKIT_CPU_COMPILE", "off")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Parallel workers (pytest -n N) share the cores: torch's threads split between them.
    import torch

    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _workers))


def shared_scene(name: str) -> Path:
    """Path of a real scene, or skip the test with the reason it is missing."""
    path = SHARED_SCENES / name
    if not path.is_dir():
        pytest.skip(f"real scene {name!r} not found at {path} (needs ../shared/scenes beside "
                    "the repository)")
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Downscale caches of read-only scenes go to a per-session temporary folder."""
    monkeypatch.setenv("FIELDKIT_CACHE", str(tmp_path_factory.getbasetemp() / "fieldkit-cache"))


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """A hash-grid run trained once per session on the demo scene (48 px, 600 steps): shared by
    the end-to-end PSNR test and the export tests."""
    os.environ["FIELDKIT_CACHE"] = str(tmp_path_factory.getbasetemp() / "fieldkit-cache")
    from fieldkit.train.config import TrainConfig
    from fieldkit.train.run import train

    config = TrainConfig(max_steps=600, eval_every=0, checkpoint_every=1e9, log_every=5,
                         init_rays=512)
    return train(DEMO_SCENE, "hashgrid", tmp_path_factory.mktemp("demo") / "run", config,
                 downscale=2).run_dir


@pytest.fixture(scope="session")
def demo_splat_run(tmp_path_factory) -> Path:
    """A splat run trained once per session on the demo scene (48 px, 400 steps): shared by the
    splat model tests and the TSDF export test."""
    os.environ["FIELDKIT_CACHE"] = str(tmp_path_factory.getbasetemp() / "fieldkit-cache")
    from fieldkit.train.config import TrainConfig
    from fieldkit.train.run import train

    config = TrainConfig(max_steps=400, eval_every=0, checkpoint_every=1e9, log_every=5)
    return train(DEMO_SCENE, "splat", tmp_path_factory.mktemp("splat") / "run", config,
                 downscale=2).run_dir
