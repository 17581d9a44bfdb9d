"""Tests for fieldkit.data.formats.colmap_io on the real beer scene and on malformed copies."""
from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from fieldkit.data.formats import colmap_io as cio
from fieldkit.errors import SceneError

BEER = Path(__file__).resolve().parents[2].parent / "shared" / "scenes" / "beer-colmap"
BEER_SPARSE = BEER / "sparse" / "0"
needs_beer = pytest.mark.skipif(not (BEER_SPARSE / "cameras.bin").is_file(),
                                reason=f"beer COLMAP scene not found at {BEER_SPARSE}")


@pytest.fixture(scope="module")
def beer():
    """(cameras, images, points) of the beer scene, read from .bin."""
    if not (BEER_SPARSE / "cameras.bin").is_file():
        pytest.skip(f"beer COLMAP scene not found at {BEER_SPARSE}")
    return cio.read_model(BEER_SPARSE)


def _copy_beer(dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("cameras.bin", "images.bin", "points3D.bin"):
        shutil.copyfile(BEER_SPARSE / name, dst / name)
    return dst


def _raises_one_line(fn, *args, mentions: str) -> str:
    """Call fn(*args), expect a SceneError whose message is one line mentioning `mentions`."""
    with pytest.raises(SceneError) as info:
        fn(*args)
    msg = str(info.value)
    assert "\n" not in msg and "\r" not in msg, msg
    assert mentions in msg, msg
    return msg


def _project_simple_radial(cam: cio.ColmapCamera, im: cio.ColmapImage, xyz: np.ndarray) -> np.ndarray:
    """World points [N, 3] -> pixels [N, 2] with COLMAP's SIMPLE_RADIAL model (f, cx, cy, k)."""
    f, cx, cy, k = cam.params
    w2c = im.world_to_camera()  # [4, 4]
    xc = xyz @ w2c[:3, :3].T + w2c[:3, 3]  # [N, 3]
    assert np.all(xc[:, 2] > 0), "observed points must be in front of the camera"
    uv = xc[:, :2] / xc[:, 2:]  # [N, 2]
    r2 = (uv**2).sum(axis=1, keepdims=True)
    return f * uv * (1 + k * r2) + np.array([cx, cy])


# ------------------------------------------------------------------------------------ real data
@needs_beer
def test_beer_counts_and_types(beer):
    cameras, images, points = beer
    assert len(images) == 71
    assert len(points) == 4414
    assert points.ids.dtype == np.int64 and points.xyz.shape == (4414, 3) and points.xyz.dtype == np.float64
    assert points.rgb.dtype == np.uint8 and points.rgb.shape == (4414, 3)
    assert points.error.shape == (4414,)
    assert all(c.model == "SIMPLE_RADIAL" and c.params.shape == (4,) for c in cameras.values())
    assert {(c.width, c.height) for c in cameras.values()} == {(720, 1280)}
    for im in images.values():
        assert im.camera_id in cameras
        assert im.qvec.shape == (4,) and im.tvec.shape == (3,)
        assert abs(np.linalg.norm(im.qvec) - 1.0) < 1e-6
        assert im.xys.dtype == np.float64 and im.xys.shape == (len(im.point3D_ids), 2)
        assert im.point3D_ids.dtype == np.int64
        assert im.name.endswith(".jpg") and (BEER / "images" / im.name).is_file()


@needs_beer
def test_beer_world_to_camera_is_rigid(beer):
    _, images, _ = beer
    w2c = next(iter(images.values())).world_to_camera()
    assert w2c.shape == (4, 4)
    np.testing.assert_allclose(w2c[:3, :3] @ w2c[:3, :3].T, np.eye(3), atol=1e-9)
    assert np.linalg.det(w2c[:3, :3]) == pytest.approx(1.0)
    np.testing.assert_array_equal(w2c[3], [0, 0, 0, 1])


@needs_beer
def test_beer_points_reproject_onto_their_keypoints(beer):
    """Every observed 3D point projects within 4 px of the keypoint that references it."""
    cameras, images, points = beer
    row_of = {int(pid): row for row, pid in enumerate(points.ids)}
    dists = []
    for im in images.values():
        seen = im.point3D_ids >= 0  # [M]
        xyz = points.xyz[[row_of[int(pid)] for pid in im.point3D_ids[seen]]]  # [K, 3]
        uv = _project_simple_radial(cameras[im.camera_id], im, xyz)  # [K, 2]
        dists.append(np.linalg.norm(uv - im.xys[seen], axis=1))
        assert dists[-1].max() < 4.0, f"{im.name}: worst reprojection {dists[-1].max():.2f}px"
    all_dists = np.concatenate(dists)
    assert all_dists.size > 10000
    assert np.median(all_dists) < 1.0  # a wrong axis/quaternion order would give hundreds of px


# ----------------------------------------------------------------------------------- round trips
def _assert_models_equal(a, b, with_points=True):
    cams_a, ims_a, pts_a = a
    cams_b, ims_b, pts_b = b
    assert cams_a.keys() == cams_b.keys() and ims_a.keys() == ims_b.keys()
    for cid, ca in cams_a.items():
        cb = cams_b[cid]
        assert (ca.model, ca.width, ca.height) == (cb.model, cb.width, cb.height)
        np.testing.assert_array_equal(ca.params, cb.params)
    for iid, ia in ims_a.items():
        ib = ims_b[iid]
        assert (ia.name, ia.camera_id) == (ib.name, ib.camera_id)
        np.testing.assert_array_equal(ia.qvec, ib.qvec)
        np.testing.assert_array_equal(ia.tvec, ib.tvec)
        np.testing.assert_array_equal(ia.xys, ib.xys)
        np.testing.assert_array_equal(ia.point3D_ids, ib.point3D_ids)
    if with_points:
        for field in ("ids", "xyz", "rgb", "error"):
            np.testing.assert_array_equal(getattr(pts_a, field), getattr(pts_b, field))
            assert getattr(pts_a, field).dtype == getattr(pts_b, field).dtype


def _write_model(model, out: Path, ext: str) -> Path:
    cams, ims, pts = model
    out.mkdir(parents=True, exist_ok=True)
    getattr(cio, f"write_cameras_{ext}")(cams, out / f"cameras.{ext}")
    getattr(cio, f"write_images_{ext}")(ims, out / f"images.{ext}")
    getattr(cio, f"write_points3D_{ext}")(pts, out / f"points3D.{ext}")
    return out


@needs_beer
def test_round_trip_bin_to_txt(beer, tmp_path):
    out = _write_model(beer, tmp_path / "txt", "txt")
    assert not any(out.glob("*.bin"))
    _assert_models_equal(beer, cio.read_model(out))


@needs_beer
def test_round_trip_bin_to_bin(beer, tmp_path):
    out = _write_model(beer, tmp_path / "bin", "bin")
    _assert_models_equal(beer, cio.read_model(out))


@needs_beer
def test_bin_preferred_over_txt(beer, tmp_path):
    out = _write_model(beer, tmp_path / "both", "txt")
    cams, ims, pts = beer
    first = next(iter(ims))
    ims = dict(ims)
    ims[first] = cio.ColmapImage(first, ims[first].qvec, ims[first].tvec, ims[first].camera_id,
                                 "from-bin.jpg", ims[first].xys, ims[first].point3D_ids)
    cio.write_images_bin(ims, out / "images.bin")
    assert cio.read_model(out)[1][first].name == "from-bin.jpg"


def test_small_txt_model_without_points(tmp_path):
    (tmp_path / "cameras.txt").write_text(
        "# comment\n1 PINHOLE 640 480 500 500 320 240\n2 THIN_PRISM_FISHEYE 10 20 " + "0.5 " * 12 + "\n")
    (tmp_path / "images.txt").write_text(
        "# IMAGE_ID ...\n"
        "1 1 0 0 0 0.1 0.2 0.3 1 a b.png\n"
        "\n"
        "7 0 1 0 0 1 2 3 2 c.png\n"
        "1.5 2.5 -1 3.0 4.0 42\n")
    cams, ims, pts = cio.read_model(tmp_path)
    assert cams[1].model == "PINHOLE" and cams[1].params.tolist() == [500, 500, 320, 240]
    assert cams[2].model == "THIN_PRISM_FISHEYE" and cams[2].params.shape == (12,)
    assert ims[1].name == "a b.png" and ims[1].xys.shape == (0, 2) and ims[1].point3D_ids.shape == (0,)
    np.testing.assert_array_equal(ims[1].world_to_camera()[:3, :3], np.eye(3))
    np.testing.assert_array_equal(ims[7].xys, [[1.5, 2.5], [3.0, 4.0]])
    np.testing.assert_array_equal(ims[7].point3D_ids, [-1, 42])
    # q = (0, 1, 0, 0) is a 180 degree turn about x
    np.testing.assert_allclose(ims[7].world_to_camera()[:3, :3], np.diag([1.0, -1.0, -1.0]))
    assert len(pts) == 0 and pts.xyz.shape == (0, 3) and pts.rgb.dtype == np.uint8


def test_all_model_ids_known_in_binary(tmp_path):
    cams = {mid + 1: cio.ColmapCamera(mid + 1, name, 4, 3, np.arange(n, dtype=np.float64))
            for mid, (name, n) in cio.CAMERA_MODELS.items()}
    assert len(cams) == 11
    cio.write_cameras_bin(cams, tmp_path / "cameras.bin")
    back = cio.read_cameras_bin(tmp_path / "cameras.bin")
    assert [c.model for c in back.values()] == [c.model for c in cams.values()]
    assert all(np.array_equal(back[k].params, cams[k].params) for k in cams)


# ------------------------------------------------------------------------------------- malformed
def test_missing_dir(tmp_path):
    _raises_one_line(cio.read_model, tmp_path / "nope" / "sparse" / "0", mentions="nope")


def test_dir_without_cameras(tmp_path):
    (tmp_path / "images.txt").write_text("")
    _raises_one_line(cio.read_model, tmp_path, mentions="cameras.bin")


def test_missing_file_direct(tmp_path):
    _raises_one_line(cio.read_images_bin, tmp_path / "images.bin", mentions="images.bin")


@needs_beer
@pytest.mark.parametrize("name,cut", [("cameras.bin", 10), ("cameras.bin", 3984 - 4),
                                      ("images.bin", 1000), ("images.bin", 2006111 // 2),
                                      ("points3D.bin", 12345)])
def test_truncated_binary(tmp_path, name, cut):
    sparse = _copy_beer(tmp_path)
    data = (sparse / name).read_bytes()
    (sparse / name).write_bytes(data[: len(data) - cut])
    msg = _raises_one_line(cio.read_model, sparse, mentions=name)
    assert "truncated or corrupt" in msg


def test_empty_binary(tmp_path):
    (tmp_path / "cameras.bin").write_bytes(b"")
    _raises_one_line(cio.read_cameras_bin, tmp_path / "cameras.bin", mentions="cameras.bin")


def test_absurd_point_count(tmp_path):
    (tmp_path / "points3D.bin").write_bytes(struct.pack("<Q", 2**63) + b"\x00" * 60)
    _raises_one_line(cio.read_points3D_bin, tmp_path / "points3D.bin", mentions="points3D.bin")


@needs_beer
def test_unknown_model_id(tmp_path):
    sparse = _copy_beer(tmp_path)
    data = bytearray((sparse / "cameras.bin").read_bytes())
    struct.pack_into("<i", data, 8 + 4, 99)  # first camera's model_id
    (sparse / "cameras.bin").write_bytes(bytes(data))
    msg = _raises_one_line(cio.read_model, sparse, mentions="cameras.bin")
    assert "99" in msg


@pytest.mark.parametrize("name,text", [
    ("cameras.txt", "1 PINHOLE 640 480 500 500 320 240\n2 PINHOLE abc 480 1 2 3 4\n"),
    ("cameras.txt", "1 PINHOLE 640 480 500 500 320\n"),
    ("cameras.txt", "1 NOT_A_MODEL 640 480 1 2 3\n"),
    ("cameras.txt", "1\n"),
    ("images.txt", "1 1 0 0 0 0 0 0 1\n\n"),
    ("images.txt", "1 1 0 0 0 0 0 0 1 a.png\n1.0 2.0\n"),
    ("images.txt", "1 1 0 0 0 0 0 0 1 a.png\n1.0 2.0 x\n"),
    ("images.txt", "1 one 0 0 0 0 0 0 1 a.png\n\n"),
    ("points3D.txt", "1 0 0 0 255 255 255 0.5\n2 0 0 0 300 0 0 0.5\n"),
    ("points3D.txt", "1 0 0 zero 1 2 3 0.5\n"),
    ("points3D.txt", "1 0 0 0 1 2 3 0.5 7\n"),
])
def test_garbage_text_line(tmp_path, name, text):
    files = {"cameras.txt": "1 PINHOLE 640 480 500 500 320 240\n",
             "images.txt": "1 1 0 0 0 0 0 0 1 a.png\n\n",
             "points3D.txt": "1 0 0 0 1 2 3 0.5\n"}
    files[name] = "# header\n" + text
    for fname, body in files.items():
        (tmp_path / fname).write_text(body)
    msg = _raises_one_line(cio.read_model, tmp_path, mentions=name)
    assert "line " in msg


def test_non_utf8_text(tmp_path):
    (tmp_path / "cameras.txt").write_bytes(b"1 PINHOLE 640 480 1 2 3 4\xff\n")
    _raises_one_line(cio.read_cameras_txt, tmp_path / "cameras.txt", mentions="cameras.txt")


def test_image_with_undefined_camera(tmp_path):
    (tmp_path / "cameras.txt").write_text("1 PINHOLE 640 480 500 500 320 240\n")
    (tmp_path / "images.txt").write_text("1 1 0 0 0 0 0 0 5 a.png\n\n")
    _raises_one_line(cio.read_model, tmp_path, mentions="images.txt")
