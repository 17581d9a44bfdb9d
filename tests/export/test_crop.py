"""`--crop X0 Y0 Z0 X1 Y1 Z1` (box coordinates) on every export, on videos and in the viewer's
export buttons: only what lies in the box comes out, in world units, and the rest of the
object is as it was."""
import json
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from fieldkit.cli import main
from fieldkit.data.demo import scene_sdf
from fieldkit.data.normalize import Normalisation
from fieldkit.render.crop import CropBox

o3d = pytest.importorskip("open3d", reason="mesh export needs open3d (bash .ci/setup test)")

RIGHT = ["0", "-1", "-1", "1", "1", "1"]
"""The half of the box with x >= 0 (the demo object spans about -0.6..0.6 on every axis)."""


def _to_box(run, world: np.ndarray) -> np.ndarray:
    norm = Normalisation.from_dict(json.loads((run / "config.json").read_text())["normalisation"])
    return norm.to_box(torch.as_tensor(world)).numpy()


def test_a_cropped_mesh_is_the_part_in_the_box_closed_along_the_cut(demo_run, tmp_path):
    full, half = tmp_path / "full.ply", tmp_path / "half.ply"
    assert main(["export", "mesh", str(demo_run), "--out", str(full), "--resolution", "96"]) == 0
    assert main(["export", "mesh", str(demo_run), "--out", str(half), "--resolution", "96",
                 "--crop", *RIGHT]) == 0
    mf, mh = (o3d.io.read_triangle_mesh(str(p)) for p in (full, half))
    vf, vh = _to_box(demo_run, np.asarray(mf.vertices)), _to_box(demo_run, np.asarray(mh.vertices))
    step = 2 / 95                                      # the crop's longest side is the box's
    assert vh[:, 0].min() > -step and (vf[:, 0] < -0.2).any()
    # the part away from the cut is the same surface: as close to the analytic shape as the
    # full mesh is there (measured 0.023 world units, a 4th of the lattice spacing, for both)
    off = lambda m, v: np.median(np.abs(scene_sdf(np.asarray(m.vertices)[v[:, 0] > 2 * step])))  # noqa
    assert (vh[:, 0] > 2 * step).sum() > 2000
    assert off(mh, vh) < off(mf, vf) + 0.005
    # the cut is closed: vertices on the plane x = 0, the cap's normals point out of the box
    mh.compute_vertex_normals()
    cap = np.abs(vh[:, 0]) < step
    assert cap.sum() > 100
    assert (np.asarray(mh.vertex_normals)[cap, 0] < -0.5).mean() > 0.7
    # a small box gets the whole lattice: finer edges than the full mesh at the same resolution
    small = tmp_path / "small.ply"
    assert main(["export", "mesh", str(demo_run), "--out", str(small), "--resolution", "96",
                 "--crop", "0", "-0.3", "-0.3", "0.6", "0.3", "0.3"]) == 0
    edge = lambda m: np.median(np.linalg.norm(                            # noqa: E731
        np.diff(np.asarray(m.vertices)[np.asarray(m.triangles)[:, :2]], axis=1)[:, 0], axis=-1))
    assert edge(o3d.io.read_triangle_mesh(str(small))) < 0.5 * edge(mf)


def test_cropped_points_splats_and_tsdf_lie_in_the_box(demo_run, demo_splat_run, tmp_path,
                                                       capsys):
    from fieldkit.splats.foreign import read_splats

    pts = tmp_path / "points.ply"
    assert main(["export", "points", str(demo_run), "--out", str(pts), "--num", "5000",
                 "--views", "8", "--crop", *RIGHT]) == 0
    p = _to_box(demo_run, np.asarray(o3d.io.read_point_cloud(str(pts)).points))
    assert len(p) > 1000 and p[:, 0].min() >= 0

    whole, half = tmp_path / "all.ply", tmp_path / "half.spz"
    assert main(["export", "splats", str(demo_splat_run), "--out", str(whole)]) == 0
    assert main(["export", "splats", str(demo_splat_run), "--out", str(half),
                 "--crop", *RIGHT]) == 0
    n_all, n_half = (len(read_splats(f)["means"]) for f in (whole, half))
    means = _to_box(demo_splat_run, read_splats(half)["means"].double().numpy())
    assert 0.2 * n_all < n_half < 0.8 * n_all and means[:, 0].min() >= -1e-3  # .spz rounding

    tsdf = tmp_path / "tsdf.ply"
    assert main(["export", "mesh", str(demo_splat_run), "--out", str(tsdf), "--method", "tsdf",
                 "--resolution", "64", "--views", "20", "--crop", *RIGHT]) == 0
    v = _to_box(demo_splat_run, np.asarray(o3d.io.read_triangle_mesh(str(tsdf)).vertices))
    assert len(v) > 500 and v[:, 0].min() > -4 * 2 / 64   # within the truncation band
    summaries = capsys.readouterr().out.splitlines()
    assert sum("inside the crop box" in line for line in summaries) == 3, summaries


def test_a_cropped_video_shows_only_the_box(demo_run, tmp_path):
    whole, half = tmp_path / "all.mp4", tmp_path / "half.mp4"
    args = ["render", str(demo_run), "--frames", "4", "--width", "48"]
    assert main([*args, "--out", str(whole)]) == 0
    assert main([*args, "--out", str(half), "--crop", *RIGHT]) == 0
    drawn = lambda f: (np.abs(np.stack(list(iio.imiter(f))).astype(int) - 255).sum(-1)  # noqa
                       > 60).mean()
    assert 0.2 * drawn(whole) < drawn(half) < 0.8 * drawn(whole)


def test_the_viewers_exports_apply_its_crop_box(demo_splat_run, tmp_path):
    from fieldkit.splats.foreign import read_splats
    from fieldkit.viewer.jobs import export_points_job, export_splats_job

    source = SimpleNamespace(run_dir=demo_splat_run, is_splat=True)
    session = SimpleNamespace(
        viewer=SimpleNamespace(sources=[source], live=None),
        view=SimpleNamespace(settings=SimpleNamespace(crop=CropBox((0, -1, -1), (1, 1, 1)))))
    out = export_splats_job(session, tmp_path / "v.ply", lambda _: None)
    means = _to_box(demo_splat_run, read_splats(out)["means"].double().numpy())
    assert len(means) > 100 and means[:, 0].min() >= 0
    from fieldkit.export.splats import SplatFilter       # the panel's min opacity, SH degree

    faint = export_splats_job(session, tmp_path / "f.ply", lambda _: None, SplatFilter(0.3, 1))
    back = read_splats(faint)
    assert len(back["means"]) < len(means) and back["shN"].shape[1] == 3
    out = export_points_job(session, tmp_path / "p.ply", 5000, lambda _: None)
    p = _to_box(demo_splat_run, np.asarray(o3d.io.read_point_cloud(str(out)).points))
    assert len(p) > 1000 and p[:, 0].min() >= 0


@pytest.mark.parametrize("crop, needle", [
    (["0", "0", "0", "0", "1", "1"], "must lie below the maximum corner"),
    (["0", "0", "0", "nan", "1", "1"], "six finite numbers"),
    (["2", "2", "2", "3", "3", "3"], "lies outside the scene's box"),
])
def test_bad_crop_boxes_are_one_line_errors(demo_run, tmp_path, capsys, crop, needle):
    assert main(["export", "mesh", str(demo_run), "--out", str(tmp_path / "m.ply"),
                 "--crop", *crop]) == 1
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_a_crop_with_no_gaussians_is_a_one_line_error(demo_splat_run, tmp_path, capsys):
    assert main(["export", "splats", str(demo_splat_run), "--out", str(tmp_path / "s.ply"),
                 "--crop", "0.9", "0.9", "0.9", "1", "1", "1"]) == 1
    assert "holds none of the" in capsys.readouterr().err
