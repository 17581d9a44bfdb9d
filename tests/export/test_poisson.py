"""Poisson mesh export: the rendered point cloud of a hash-grid run and of a splat run,
reconstructed, lands on the demo's analytic surface, faces outwards, keeps colours and reads
back in trimesh and open3d."""
import pytest

from fieldkit.cli import main
from tests.export.test_tsdf import check_rendered_mesh

pytest.importorskip("open3d", reason="mesh export needs open3d (bash .ci/setup test)")
pytest.importorskip("trimesh", reason="the round-trip test reads meshes with trimesh")

# The floor is test_tsdf's MAX_SYMMETRIC_DISTANCE (2% of the object's size). From 32 views of
# 48 px at depth 8: measured 1.22% (hash grid) and 1.71% (splats), like TSDF; at the defaults
# (64 views) 1.30% and 1.66%. Poisson's invented surface left in (no density trim), or the
# points' normals left unturned, lands far above it.


@pytest.mark.parametrize("fixture", ["demo_run", "demo_splat_run"])
def test_poisson_mesh_of_the_demo_shape(fixture, request, tmp_path, capsys):
    run = request.getfixturevalue(fixture)
    out = tmp_path / "poisson.ply"
    assert main(["export", "mesh", str(run), "--out", str(out), "--method", "poisson",
                 "--views", "32"]) == 0
    assert "screened Poisson" in capsys.readouterr().out
    check_rendered_mesh(out, f"poisson {fixture}", min_faces=5000)


def test_bad_poisson_requests_are_one_line_errors(demo_run, tmp_path, capsys):
    assert main(["export", "mesh", str(demo_run), "--out", str(tmp_path / "m.ply"),
                 "--method", "poisson", "--resolution", "8192"]) == 1
    assert "--resolution must give an octree depth of 5 to 12" in capsys.readouterr().err
