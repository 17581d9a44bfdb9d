"""Mesh export: marching cubes on a known shape, file round trips through trimesh and open3d,
world units, and clean errors."""
import json

import numpy as np
import pytest
import torch

from fieldkit.cli import main
from fieldkit.data.demo import scene_normals, scene_sdf
from fieldkit.data.scene import load_scene
from fieldkit.export.mesh import _clean, _isosurface, auto_threshold

o3d = pytest.importorskip("open3d", reason="mesh export needs open3d (bash .ci/setup test)")
trimesh = pytest.importorskip("trimesh", reason="the round-trip test reads meshes with trimesh")

# Measured on the shared 600-step, 48 px demo run: ~1% of the object's size (its bounding-box
# diagonal, 3.1 world units). A mesh in box units instead of world units, a transposed lattice
# or a wrong threshold lands far above this.
MAX_SYMMETRIC_DISTANCE = 0.02


def test_isosurface_of_an_analytic_sphere_is_in_place():
    ax = np.linspace(-1, 1, 64)
    x, y, z = np.meshgrid(ax, ax, ax, indexing="ij")
    volume = 1.0 - np.sqrt((x - 0.3) ** 2 + (y + 0.1) ** 2 + z**2) / 0.5   # > 0 inside
    mesh = _clean(_isosurface(volume, 0.0, [torch.linspace(-1, 1, 64)] * 3), 0.01, None)
    v = np.asarray(mesh.vertices)
    assert np.abs(np.linalg.norm(v - [0.3, -0.1, 0.0], axis=1) - 0.5).max() < 2e-3
    assert mesh.is_watertight()


def test_auto_threshold_splits_empty_from_solid():
    rng = np.random.default_rng(0)
    volume = np.concatenate([rng.lognormal(np.log(0.05), 0.5, 5000),
                             rng.lognormal(np.log(200.0), 0.5, 5000)])
    assert 0.3 < auto_threshold(volume) < 40


def _surface_samples(n: int = 40000) -> np.ndarray:
    p = np.random.default_rng(0).uniform(-1.5, 1.5, (n, 3))
    for _ in range(8):
        p = p - scene_sdf(p)[:, None] * scene_normals(p)
    return p[np.abs(scene_sdf(p)) < 1e-5]


def symmetric_distance(mesh) -> float:
    """Mean symmetric distance between a world-unit mesh and the analytic demo surface, as a
    fraction of the object's size (its bounding-box diagonal)."""
    v = np.asarray(mesh.vertices)
    to_true = np.abs(scene_sdf(v)).mean()
    truth = _surface_samples()
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    to_mesh = scene.compute_distance(o3d.core.Tensor(truth.astype(np.float32))).numpy().mean()
    size = np.linalg.norm(truth.max(0) - truth.min(0))
    return float(0.5 * (to_true + to_mesh) / size)


def outward_fraction(mesh) -> float:
    """Fraction of vertices whose normal points out of the analytic shape."""
    v, n = np.asarray(mesh.vertices), np.asarray(mesh.vertex_normals)
    return float((scene_sdf(v + 0.05 * n) > scene_sdf(v - 0.05 * n)).mean())


def test_mesh_of_the_demo_shape_is_close_and_loads_everywhere(demo_run, tmp_path, capsys):
    paths = {}
    for suffix in (".ply", ".obj", ".glb"):
        paths[suffix] = tmp_path / f"mesh{suffix}"
        assert main(["export", "mesh", str(demo_run), "--out", str(paths[suffix]),
                     "--resolution", "192"]) == 0
    assert "world units" in capsys.readouterr().out
    ref = o3d.io.read_triangle_mesh(str(paths[".ply"]))
    nv, nf = len(ref.vertices), len(ref.triangles)
    assert nf > 5000 and ref.has_vertex_colors() and ref.has_vertex_normals()
    for suffix, path in paths.items():  # every format reads back whole in both libraries
        tm = trimesh.load(path, force="mesh", process=False)
        om = o3d.io.read_triangle_mesh(str(path))
        assert len(om.triangles) == nf and len(tm.faces) == nf, suffix
        if suffix != ".obj":  # .obj splits vertices by normal and colour on write
            assert len(om.vertices) == nv and len(tm.vertices) == nv, suffix

    symmetric = symmetric_distance(ref)
    print(f"mesh: {nf} faces, symmetric distance {100 * symmetric:.2f}% of the object's size")
    assert symmetric < MAX_SYMMETRIC_DISTANCE, symmetric
    assert outward_fraction(ref) > 0.9
    v = np.asarray(ref.vertices)

    # World units: vertices project into a training image onto the object (alpha > 0).
    scene_data = load_scene(json.loads((demo_run / "config.json").read_text())["scene"])
    image = scene_data.image(0)                                  # [H, W, 4] RGBA
    pick = torch.as_tensor(v[np.random.default_rng(1).choice(len(v), 2000)], dtype=torch.float32)
    box = scene_data.normalisation.to_box(pick)                  # cameras live in box units
    uv, depth = scene_data.cameras.project(torch.zeros(len(box), dtype=torch.long), box)
    assert (depth > 0).all()
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < image.shape[1]) & (uv[:, 1] >= 0) & \
        (uv[:, 1] < image.shape[0])
    px = uv[inside].long()
    # alpha within one pixel: vertices on the silhouette land on anti-aliased edge pixels
    alpha = torch.nn.functional.max_pool2d(image[None, None, :, :, 3].float() / 255, 3, 1, 1)
    hit = alpha[0, 0, px[:, 1], px[:, 0]]
    assert inside.float().mean() > 0.5 and (hit > 0.5).float().mean() > 0.95


def test_bad_mesh_requests_are_one_line_errors(demo_run, tmp_path, capsys):
    assert main(["export", "mesh", str(demo_run), "--out", str(tmp_path / "m.stl")]) == 1
    assert "--out must end in .ply, .obj, .glb" in capsys.readouterr().err
    assert main(["export", "mesh", str(demo_run), "--out", str(tmp_path / "m.ply"),
                 "--threshold", "lots"]) == 1
    assert "--threshold must be auto or a number" in capsys.readouterr().err
    assert main(["export", "mesh", str(demo_run), "--out", str(tmp_path / "m.ply"),
                 "--threshold", "1e9"]) == 1
    assert "no density reaches the threshold" in capsys.readouterr().err
    assert main(["export", "mesh", str(tmp_path), "--out", str(tmp_path / "m.ply")]) == 1
    assert "is neither a fieldkit run" in capsys.readouterr().err
