"""Web splat files against other libraries, when node and their npm packages are here
(`bash .ci/setup test` installs them into .ci/npm):

- the reference SPZ library (nianticlabs/spz as WebAssembly, npm @adobe/spz): our .spz and its
  versions 2-4, both ways;
- PlayCanvas splat-transform (SuperSplat's converter): it reads our .spz, .compressed.ply and
  .splat as we do, and we read its .spz, .compressed.ply, .splat and .sog as it does;
- GaussianSplats3D (npm @mkkellogg/gaussian-splats-3d): we read the .ksplat it makes from a
  .ply, at its three compression levels, as it reads them.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from fieldkit.splats.compressed_ply import write_compressed_ply
from fieldkit.splats.foreign import read_splats
from fieldkit.splats.ply import read_splat_ply, write_splat_ply
from fieldkit.splats.splat_file import write_splat_file
from fieldkit.splats.spz import read_spz, spz_antialiased, write_spz
from tests.splats.test_web_formats import _params

NPM = Path(__file__).resolve().parents[2] / ".ci/npm/node_modules"
REFERENCE = NPM / "@adobe/spz/dist/spz.js"
SPLAT_TRANSFORM = NPM / ".bin/splat-transform"
KSPLAT_LIB = NPM / "@mkkellogg/gaussian-splats-3d/build/gaussian-splats-3d.module.js"
NO_NODE = shutil.which("node") is None


def _reference(*args: str) -> None:
    subprocess.run(["node", str(Path(__file__).with_name("spz_reference.mjs")), str(REFERENCE),
                    *args], check=True, capture_output=True, timeout=120)


def _splat_transform(src: Path, dst: Path) -> None:
    """Convert with splat-transform on the CPU (-g cpu), overwriting (-w)."""
    subprocess.run([str(SPLAT_TRANSFORM), "-g", "cpu", "-w", str(src), str(dst)], check=True,
                   capture_output=True, timeout=300)


@pytest.mark.skipif(NO_NODE or not REFERENCE.is_file(),
                    reason="needs node and the reference SPZ library (.ci/setup test installs "
                           "@adobe/spz with npm)")
def test_spz_files_agree_with_the_reference_library(tmp_path):
    """Ours -> the reference reads what we read; the reference's versions 2-4 -> we read what
    it reads (opacity bytes 0 and 255 aside: the reference turns them into infinite logits)."""
    def same(ref: dict, got: dict[str, torch.Tensor], n: int) -> None:
        arr = {k: np.asarray(v, np.float64) for k, v in ref.items() if isinstance(v, list)}
        assert np.abs(arr["positions"].reshape(n, 3) - got["means"].numpy()).max() < 1e-6
        assert np.abs(arr["scales"].reshape(n, 3) - got["scales"].numpy()).max() < 1e-6
        assert np.abs(arr["rotations"].reshape(n, 4)[:, [3, 0, 1, 2]]
                      - got["quats"].numpy()).max() < 1e-4
        alpha = 1 / (1 + np.exp(-np.clip(arr["alphas"], -80, 80)))
        assert np.abs(alpha - torch.sigmoid(got["opacities"]).double().numpy()).max() < 2.5e-3
        assert np.abs(arr["colors"].reshape(n, 3) - got["sh0"].reshape(n, 3).numpy()).max() < 1e-6
        assert np.abs(arr["sh"].reshape(n, 15, 3) - got["shN"].numpy()).max() < 1e-6

    p = _params(n=300)
    write_spz(tmp_path / "ours.spz", p, antialiased=True)
    _reference("load", str(tmp_path / "ours.spz"), str(tmp_path / "ours.json"))
    ref = json.loads((tmp_path / "ours.json").read_text())
    same(ref, read_spz(tmp_path / "ours.spz"), 300)
    assert ref["antialiased"] is True                   # the header flag, as the library reads it
    cloud = {"numPoints": 300, "shDegree": 3, "antialiased": True,
             "positions": p["means"].flatten().tolist(), "scales": p["scales"].flatten().tolist(),
             "rotations": p["quats"][:, [1, 2, 3, 0]].flatten().tolist(),
             "alphas": p["opacities"].tolist(), "colors": p["sh0"].flatten().tolist(),
             "sh": p["shN"].flatten().tolist()}
    (tmp_path / "in.json").write_text(json.dumps(cloud))
    for version in (2, 3, 4):
        spz = tmp_path / f"ref{version}.spz"
        _reference("save", str(tmp_path / "in.json"), str(spz), str(version))
        _reference("load", str(spz), str(tmp_path / f"ref{version}.json"))
        same(json.loads((tmp_path / f"ref{version}.json").read_text()), read_spz(spz), 300)
        assert spz_antialiased(spz)


def _agree(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], what: str) -> None:
    """The same Gaussians decoded by both (quaternions up to sign, logits up to the clamp at
    opacity bytes 0 and 255). A .splat's quaternion bytes are written as q * 128 + 128 (gsplat,
    and antimatter15's converter) and read back as (b - 128) / 128, as antimatter15's viewer
    does; splat-transform reads (b - 127.5) / 127.5, at most a few tenths of a degree away."""
    quat_tol = 1e-4 if what.endswith(".splat") else 1e-5
    assert ours["means"].shape == theirs["means"].shape, what
    for key in ("means", "scales", "sh0", "shN"):
        assert ours[key].shape == theirs[key].shape, (what, key)
        assert np.abs((ours[key] - theirs[key]).numpy()).max(initial=0) <= 1e-5, (what, key)
    dot = (torch.nn.functional.normalize(ours["quats"], dim=1)
           * torch.nn.functional.normalize(theirs["quats"], dim=1)).sum(1).abs()
    assert dot.min() > 1 - quat_tol, what
    assert (torch.sigmoid(ours["opacities"]) - torch.sigmoid(theirs["opacities"])).abs().max() \
        <= 2.5e-3, what


@pytest.mark.skipif(NO_NODE or not SPLAT_TRANSFORM.is_file(),
                    reason="needs node and PlayCanvas splat-transform (.ci/setup test installs "
                           "@playcanvas/splat-transform with npm)")
def test_splat_transform_reads_our_files_and_we_read_its_files(tmp_path):
    p = _params(n=500)
    p0 = {**p, "shN": p["shN"][:, :0]}
    ours = {"ours.spz": (write_spz, p), "ours.compressed.ply": (write_compressed_ply, p),
            "ours.splat": (write_splat_file, p0),
            "ours0.compressed.ply": (write_compressed_ply, p0),   # --max-sh-degree 0: no SH
            "ours0.spz": (write_spz, p0)}
    for name, (write, params) in ours.items():
        path = write(tmp_path / name, params)
        _splat_transform(path, tmp_path / f"{name}.ply")
        _agree(read_splats(path), read_splat_ply(tmp_path / f"{name}.ply"), f"theirs reading {name}")
    source = write_splat_ply(tmp_path / "source.ply", p)
    for name in ("theirs.spz", "theirs.compressed.ply", "theirs.splat", "theirs.sog"):
        _splat_transform(source, tmp_path / name)
        _splat_transform(tmp_path / name, tmp_path / f"{name}.ply")
        _agree(read_splats(tmp_path / name), read_splat_ply(tmp_path / f"{name}.ply"),
               f"us reading {name}")


@pytest.mark.skipif(NO_NODE or not KSPLAT_LIB.is_file(),
                    reason="needs node and GaussianSplats3D (.ci/setup test installs "
                           "@mkkellogg/gaussian-splats-3d and three with npm)")
@pytest.mark.parametrize("level,degree", [(0, 2), (1, 1), (2, 2)])
def test_we_read_ksplat_files_as_gaussiansplats3d_does(tmp_path, level, degree):
    """Its converter (sections, buckets, half floats, 8-bit SH) on a .ply of ours; then every
    splat as its getters decode it against ours, and against the .ply where the format is
    exact (level 0: centres, scales, SH)."""
    from fieldkit.splats.ksplat import read_ksplat

    script = str(Path(__file__).with_name("ksplat_reference.mjs"))
    ply = write_splat_ply(tmp_path / "in.ply", _params(n=700))
    ksplat, decoded = tmp_path / "x.ksplat", tmp_path / "x.json"
    for args in (("make", str(ply), str(ksplat), str(level), str(degree)),
                 ("read", str(ksplat), str(decoded))):
        subprocess.run(["node", script, str(KSPLAT_LIB), *args], check=True,
                       capture_output=True, timeout=120)
    ref = json.loads(decoded.read_text())
    ours = read_ksplat(ksplat)
    n = ref["n"]
    assert n > 600 and len(ours["means"]) == n and ours["shN"].shape == (n, (degree + 1) ** 2 - 1, 3)
    arr = {k: np.asarray(ref[k], np.float64) for k in ("centers", "scales", "rotations", "colors")}
    assert np.abs(arr["centers"].reshape(n, 3) - ours["means"].numpy()).max() < 1e-6
    assert np.abs(arr["scales"].reshape(n, 3) - ours["scales"].exp().numpy()).max() < 1e-6
    assert np.abs(arr["rotations"].reshape(n, 4) - ours["quats"].numpy()).max() < 1e-6
    from fieldkit.encoders.sh import C0

    colour = (ours["sh0"].reshape(n, 3).numpy() * C0 + 0.5) * 255
    assert np.abs(arr["colors"].reshape(n, 4)[:, :3] - colour).max() < 1e-3
    alpha = torch.sigmoid(ours["opacities"]).numpy() * 255
    assert np.abs(arr["colors"].reshape(n, 4)[:, 3] - alpha).max() < 0.51     # ends clamped
    sh = np.asarray(ref["sh"], np.float64).reshape(n, -1, 3)
    assert np.abs(sh - ours["shN"].numpy()).max() < 1e-6
    if level == 0:   # float32 throughout: the .ply's own values, matched by centre
        src = read_splat_ply(ply)
        at = {tuple(m): i for i, m in enumerate(src["means"].numpy())}
        pick = np.array([at[tuple(m)] for m in ours["means"].numpy()])
        assert np.abs(src["scales"].numpy()[pick] - ours["scales"].numpy()).max() < 1e-5
        k = ours["shN"].shape[1]
        assert np.abs(src["shN"].numpy()[pick][:, :k] - ours["shN"].numpy()).max() < 1e-6
