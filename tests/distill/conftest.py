"""Fixtures the distillation tests share."""
from __future__ import annotations

from pathlib import Path

import pytest

from fieldkit.cli import main


@pytest.fixture(scope="session")
def demo_ply(demo_splat_run, tmp_path_factory) -> Path:
    """The demo's splat run exported as a 3DGS .ply (world units), as another trainer writes."""
    path = tmp_path_factory.mktemp("ply") / "demo.ply"
    assert main(["export", "splats", str(demo_splat_run), "--out", str(path)]) == 0
    return path
