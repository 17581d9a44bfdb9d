"""Web page exports (``--out X.html``): the scene embedded in the page is decoded here as
viser's client decodes it, and must be the run's own Gaussians, mesh or points, in its box,
opening at its first training camera. (tests/viewer/test_web_page_browser.py opens one.)"""
from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
import torch

from fieldkit.cli import main
from fieldkit.data.demo import scene_sdf
from fieldkit.data.normalize import Normalisation
from fieldkit.train.run import read_config, run_train_cameras

pytest.importorskip("viser", reason="web pages embed viser's client (bash .ci/setup test)")
pytest.importorskip("open3d", reason="mesh and point exports need open3d (bash .ci/setup test)")
trimesh = pytest.importorskip("trimesh", reason="the mesh page is read back with trimesh")


def embedded_scene(path) -> dict[str, list[dict]]:
    """Messages embedded in a page by type, binary placeholders resolved to numpy arrays:
    base64 -> [uint64 size][zstd] -> [uint64 n][msgpack n bytes][8-aligned buffers]."""
    import msgspec
    import zstandard

    text = path.read_text(encoding="utf-8")
    found = re.search(r'window\.__VISER_EMBED_DATA__="([^"]*)"', text)
    assert found, "no embedded scene in the page"
    raw = base64.b64decode(found.group(1))
    size = int.from_bytes(raw[:8], "little")
    inner = zstandard.ZstdDecompressor().decompress(raw[8:], max_output_size=size)
    n = int.from_bytes(inner[:8], "little")
    payload = msgspec.msgpack.decode(inner[8:8 + n])
    buffers, offset = [], 8 + n
    for length in payload["binaryBufferLengths"]:
        offset += (8 - offset % 8) % 8
        buffers.append(inner[offset:offset + length])
        offset += length

    def resolve(x):
        if isinstance(x, dict) and "__binary_index" in x:
            return np.frombuffer(buffers[x["__binary_index"]], dtype=np.dtype(x["dtype"]))
        if isinstance(x, dict):
            return {k: resolve(v) for k, v in x.items()}
        if isinstance(x, list):
            return [resolve(v) for v in x]
        return x

    out: dict[str, list[dict]] = {}
    for _, message in payload["messages"]:
        out.setdefault(message["type"], []).append(resolve(message))
    return out


def _check_view(scene: dict, run_dir) -> None:
    """The page opens at the run's first training camera (box coordinates), +z up, on the
    run's background."""
    from PIL import Image

    cams = run_train_cameras(run_dir)
    pos = scene["SetCameraPositionMessage"][-1]["position"]
    np.testing.assert_allclose(pos, cams.positions[0].double().numpy(), atol=1e-5)
    assert scene["SetCameraUpDirectionMessage"][-1]["position"] == [0.0, 0.0, 1.0]
    png = scene["BackgroundImageMessage"][-1]["rgb_data"]
    bg = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))[0, 0]
    want = 0 if read_config(run_dir)["train"].get("background") == "black" else 255
    assert (bg == want).all(), bg


def _to_world(run_dir, points: np.ndarray) -> np.ndarray:
    norm = Normalisation.from_dict(read_config(run_dir)["normalisation"])
    return norm.to_world(torch.as_tensor(np.asarray(points, np.float64))).numpy()


def test_splat_page_holds_the_runs_gaussians(demo_splat_run, tmp_path, capsys):
    from fieldkit.encoders.sh import C0
    from fieldkit.splats.ply import read_splat_ply

    page, ply = tmp_path / "splats.html", tmp_path / "splats.ply"
    for out in (page, ply):
        assert main(["export", "splats", str(demo_splat_run), "--out", str(out),
                     "--min-opacity", "0.05"]) == 0
    assert "web page" in capsys.readouterr().out
    text = page.read_text(encoding="utf-8")
    assert f"<title>{demo_splat_run.name}</title>" in text
    scene = embedded_scene(page)
    (splats,) = scene["GaussianSplatsMessage"]
    buf = splats["props"]["buffer"].reshape(-1, 8)              # viser's 32-byte layout
    want = read_splat_ply(ply)                                   # world units, same filter
    assert len(buf) == len(want["means"]) > 100
    centres = buf[:, :3].copy().view(np.float32)
    np.testing.assert_allclose(_to_world(demo_splat_run, centres), want["means"].numpy(),
                               atol=1e-4)
    rgba = buf[:, 7:8].copy().view(np.uint8).astype(int)         # [N, 4] bytes
    base = (want["sh0"][:, 0] * C0 + 0.5).clamp(0, 1).numpy() * 255
    assert np.abs(rgba[:, :3] - base).max() <= 1
    alpha = torch.sigmoid(want["opacities"]).numpy() * 255
    assert np.abs(rgba[:, 3] - alpha).max() <= 1 and alpha.min() >= 0.05 * 255 - 1
    _check_view(scene, demo_splat_run)


def test_mesh_page_holds_the_surface(demo_run, tmp_path, capsys):
    page = tmp_path / "mesh.html"
    assert main(["export", "mesh", str(demo_run), "--out", str(page),
                 "--resolution", "96"]) == 0
    faces = int(re.search(r"([\d,]+) faces", capsys.readouterr().out).group(1).replace(",", ""))
    scene = embedded_scene(page)
    (glb,) = scene["GlbMessage"]
    data = glb["props"]["glb_data"]
    mesh = trimesh.load(io.BytesIO(bytes(data)), file_type="glb", force="mesh")
    assert len(mesh.faces) == faces > 1000
    # in the box on the page: back in world units, the vertices lie on the analytic surface
    d = np.abs(scene_sdf(_to_world(demo_run, mesh.vertices)))
    assert np.median(d) < 0.05, np.median(d)
    colours = np.asarray(mesh.visual.vertex_colors)[:, :3]
    assert colours.std(0).max() > 10             # the field's colours, not one flat colour
    _check_view(scene, demo_run)


def test_points_page_holds_the_points(demo_run, tmp_path, capsys):
    page = tmp_path / "points.html"
    assert main(["export", "points", str(demo_run), "--out", str(page), "--num", "5000"]) == 0
    summary = capsys.readouterr().out
    n = int(re.search(r"([\d,]+) points", summary).group(1).replace(",", ""))
    assert "box coordinates" in summary
    scene = embedded_scene(page)
    (cloud,) = scene["PointCloudMessage"]
    pts = cloud["props"]["points"].reshape(-1, 3).astype(np.float64)   # 16-bit: box units
    assert len(pts) == n == 5000
    d = np.abs(scene_sdf(_to_world(demo_run, pts)))
    assert np.median(d) < 0.05, np.median(d)
    assert 0 < cloud["props"]["point_size"] < 0.1                # box units, a point's gap
    _check_view(scene, demo_run)


def test_page_errors_are_one_line(demo_run, tmp_path, capsys):
    assert main(["export", "splats", str(demo_run), "--out", str(tmp_path / "s.html")]) == 1
    err = capsys.readouterr().err
    assert "export mesh" in err and "distill" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert main(["export", "mesh", str(demo_run), "--out", str(tmp_path / "m.htm")]) == 1
    assert ".html" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_the_viewers_page_of_a_bare_splat_file(demo_splat_run, tmp_path):
    """The viewer's Export panel on a splat file (no run): the Gaussians shown, inside its crop
    box, in the file's own coordinates, opening at the viewer's first view."""
    from types import SimpleNamespace

    from fieldkit.export.splats import export_splats
    from fieldkit.render.crop import CropBox
    from fieldkit.splats.ply import read_splat_ply
    from fieldkit.viewer.jobs import export_splats_job
    from fieldkit.viewer.sources import Source

    ply, _ = export_splats(demo_splat_run, tmp_path / "scene.ply")
    source = Source.from_ply(ply)
    means = read_splat_ply(ply)["means"].numpy()
    lo, hi = means.min(0), means.max(0)
    crop = CropBox(tuple(map(float, lo - 1)), tuple(map(float, (lo + hi) / 2)))  # file coords
    session = SimpleNamespace(viewer=SimpleNamespace(sources=[source], live=None),
                              view=SimpleNamespace(settings=SimpleNamespace(crop=crop)))
    page = export_splats_job(session, tmp_path / "exports" / "splats.html", lambda _: None)
    scene = embedded_scene(page)
    buf = scene["GaussianSplatsMessage"][0]["props"]["buffer"].reshape(-1, 8)
    centres = buf[:, :3].copy().view(np.float32)
    inside = ((means >= crop.lo) & (means <= crop.hi)).all(1)
    assert len(centres) == inside.sum() and 0 < inside.sum() < len(means)
    np.testing.assert_allclose(np.sort(centres[:, 0]), np.sort(means[inside, 0]), atol=1e-6)
    pos = scene["SetCameraPositionMessage"][-1]["position"]
    np.testing.assert_allclose(pos, source.home_pose()[0], atol=1e-5)


def test_the_viewers_page_opens_where_its_browser_looks(demo_run, tmp_path):
    """From the viewer's Export panel a page opens at the browser's camera, on its
    background, not at the run's first view."""
    from types import SimpleNamespace

    from fieldkit.data.normalize import Normalisation
    from fieldkit.viewer.jobs import export_points_job

    norm = Normalisation.from_dict(read_config(demo_run)["normalisation"])
    camera = SimpleNamespace(position=(0.5, -2.5, 1.0), look_at=(0.1, 0.0, 0.2),
                             up_direction=(0.0, 0.0, 1.0), fov=0.9)
    session = SimpleNamespace(
        client=SimpleNamespace(camera=camera),
        viewer=SimpleNamespace(sources=[SimpleNamespace(run_dir=demo_run, normalisation=norm)],
                               live=None),
        view=SimpleNamespace(settings=SimpleNamespace(crop=None, background=(0.0, 0.0, 0.0))))
    page = export_points_job(session, tmp_path / "points.html", 3000, lambda _: None)
    scene = embedded_scene(page)
    assert scene["SetCameraPositionMessage"][-1]["position"] == list(camera.position)
    assert scene["SetCameraLookAtMessage"][-1]["look_at"] == list(camera.look_at)
    assert scene["SetCameraFovMessage"][-1]["fov"] == pytest.approx(camera.fov)
    from PIL import Image

    png = scene["BackgroundImageMessage"][-1]["rgb_data"]
    assert (np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) == 0).all()
    pts = scene["PointCloudMessage"][0]["props"]["points"].reshape(-1, 3).astype(np.float64)
    assert len(pts) == 3000 and np.median(np.abs(scene_sdf(_to_world(demo_run, pts)))) < 0.05
