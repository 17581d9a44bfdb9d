"""Splats trained in the antialiased mode stay so through files and folders: the .spz header
flag both ways, gsplat's cfg.yml, splatfacto's config.yml, a run trained with the mode, and a
one-line warning when the file written cannot record it or a classic run starts from it."""
from __future__ import annotations

import pytest
import torch

from fieldkit.cli import main
from fieldkit.distill.source import open_teacher
from fieldkit.splats.foreign import antialiased_of
from fieldkit.splats.gsplat_folder import write_gsplat_result
from fieldkit.splats.spz import spz_antialiased, write_spz
from tests.conftest import DEMO_SCENE


def _splats(n: int = 200) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"means": torch.randn(n, 3, generator=g) * 0.3, "scales": torch.full((n, 3), -3.0),
            "quats": torch.randn(n, 4, generator=g), "opacities": torch.zeros(n),
            "sh0": torch.rand(n, 1, 3, generator=g), "shN": torch.zeros(n, 3, 3)}


@pytest.mark.parametrize("version", [2, 3])
def test_the_spz_flag_is_written_and_read(tmp_path, version):
    on, off = tmp_path / "on.spz", tmp_path / "off.spz"
    write_spz(on, _splats(), version=version, antialiased=True)
    write_spz(off, _splats(), version=version)
    assert spz_antialiased(on) and antialiased_of(on)
    assert not spz_antialiased(off) and not antialiased_of(off)
    assert open_teacher(on).model.config.render.antialiased
    assert not open_teacher(off).model.config.render.antialiased
    (tmp_path / "junk.spz").write_bytes(b"not a spz")
    assert not spz_antialiased(tmp_path / "junk.spz")


def test_gsplat_and_splatfacto_configs_say_so(tmp_path):
    from tests.distill.test_splatfacto_run import NS_CONFIG, write_splatfacto_run

    for flag in (True, False):
        ckpt = write_gsplat_result(tmp_path / f"g{flag}", _splats(), 99, "nowhere",
                                   antialiased=flag)
        assert antialiased_of(ckpt) is flag and antialiased_of(ckpt.parent.parent) is flag
    mode = NS_CONFIG.replace("    sh_degree: 3\n", "    rasterize_mode: antialiased\n    sh_degree: 3\n")
    assert mode != NS_CONFIG
    run = write_splatfacto_run(tmp_path / "ns_aa", _splats(), config=mode)
    assert antialiased_of(run) and antialiased_of(next((run / "nerfstudio_models").iterdir()))
    assert not antialiased_of(write_splatfacto_run(tmp_path / "ns", _splats()))


def test_a_run_trained_antialiased_exports_the_flag(tmp_path, capsys):
    run = tmp_path / "aa"
    assert main(["train", str(DEMO_SCENE), "--model", "splat", "--downscale", "2",
                 "--max-steps", "10", "--splat.render.antialiased", "--out", str(run),
                 "--no-final-eval", "--no-video"]) == 0
    assert main(["export", "splats", str(run), "--out", str(tmp_path / "aa.spz")]) == 0
    assert spz_antialiased(tmp_path / "aa.spz")
    capsys.readouterr()
    assert main(["train", str(DEMO_SCENE), "--model", "splat", "--downscale", "2",
                 "--max-steps", "2", "--init", str(tmp_path / "aa.spz"), "--out",
                 str(tmp_path / "from_aa"), "--no-final-eval", "--no-video"]) == 0
    assert "pass --splat.render.antialiased to go on in it" in capsys.readouterr().err
    assert main(["export", "splats", str(run), "--out", str(tmp_path / "aa.ply")]) == 0
    err = capsys.readouterr().err
    assert "antialiased mode" in err and len(err.strip().splitlines()) == 1
