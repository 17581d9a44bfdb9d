"""Read (and write) COLMAP sparse reconstructions: cameras, images and points3D, .bin or .txt.

Every problem with the files raises :class:`fieldkit.errors.SceneError` with one line naming the
file and what to do; ``struct``/``ValueError``/``IndexError`` exceptions never escape. Reading
never rejects a known camera model: deciding what is supported is the loader's job.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fieldkit.errors import SceneError

# COLMAP model id -> (model name, number of params)
CAMERA_MODELS: dict[int, tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5),
    4: ("OPENCV", 8), 5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4), 9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12),
}
MODEL_IDS: dict[str, int] = {name: mid for mid, (name, _) in CAMERA_MODELS.items()}
_REEXPORT = "re-export the model from COLMAP"
_POINT_DIR = "point at a COLMAP sparse model folder (e.g. sparse/0)"
_XY_ID = np.dtype([("xy", "<f8", (2,)), ("id", "<i8")])  # one 2D keypoint record in images.bin
_POINT_FIXED = struct.Struct("<Q3d3BdQ")  # points3D.bin: id, xyz, rgb, error, track_length (51 B)


@dataclass
class ColmapCamera:
    """One COLMAP camera (intrinsics)."""

    id: int
    model: str
    width: int
    height: int
    params: np.ndarray  # [num_params] float64


@dataclass
class ColmapImage:
    """One registered image: world-to-camera pose plus its 2D keypoints."""

    id: int
    qvec: np.ndarray  # [4] float64, (w, x, y, z)
    tvec: np.ndarray  # [3] float64
    camera_id: int
    name: str
    xys: np.ndarray  # [M, 2] float64
    point3D_ids: np.ndarray  # [M] int64, -1 = no 3D point

    def world_to_camera(self) -> np.ndarray:
        """Pose with x_cam = R(q) x_world + t, OpenCV axes (+x right, +y down, +z forward).  # [4, 4]"""
        w, x, y, z = np.asarray(self.qvec, np.float64) / np.linalg.norm(self.qvec)
        m = np.eye(4)
        m[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]]
        m[:3, 3] = self.tvec
        return m


@dataclass
class ColmapPoints:
    """The sparse point cloud (tracks are not kept)."""

    ids: np.ndarray  # [P] int64
    xyz: np.ndarray  # [P, 3] float64
    rgb: np.ndarray  # [P, 3] uint8
    error: np.ndarray  # [P] float64

    @staticmethod
    def empty() -> ColmapPoints:
        """A cloud with zero points."""
        return ColmapPoints(np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0))

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def _error(path: Path, problem: str, fix: str = _REEXPORT) -> SceneError:
    """A one-line SceneError: '<path> <problem>; <fix>'."""
    return SceneError(f"{path} {problem}; {fix}".replace("\r", " ").replace("\n", " "))


def _read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise _error(path, "does not exist", _POINT_DIR) from None
    except OSError as err:
        raise _error(path, f"cannot be read ({err.strerror or err})", "check the file permissions") from None


def _data_lines(path: Path) -> list[tuple[int, str]]:
    """Non-comment lines of a text file as (1-based line number, text); blank lines are kept."""
    try:
        text = _read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as err:
        raise _error(path, f"is not UTF-8 text (bad byte at offset {err.start})") from None
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    return [(i + 1, ln) for i, ln in enumerate(lines) if not ln.lstrip().startswith("#")]


def _bad_line(path: Path, lineno: int, line: str, why: str) -> SceneError:
    return _error(path, f"line {lineno} cannot be parsed ({why}): {line.strip()[:60]!r}",
                  f"fix that line or {_REEXPORT}")


def _add_unique(path: Path, table: dict, key: int, value: object, what: str) -> None:
    if key in table:
        raise _error(path, f"lists {what} id {key} twice")
    table[key] = value


def _floats(values: np.ndarray) -> list[str]:
    """Shortest round-tripping text of each float."""
    return [repr(float(v)) for v in np.asarray(values).ravel()]


class _BinReader:
    """Sequential little-endian reader over a whole file's bytes."""

    def __init__(self, path: Path):
        self.path, self.data, self.off = Path(path), _read_bytes(path), 0

    def need(self, n: int) -> None:
        if n < 0 or self.off + n > len(self.data):
            raise _error(self.path, f"is truncated or corrupt (expected {n} more bytes at offset {self.off})")

    def unpack(self, st: struct.Struct | str) -> tuple:
        st = st if isinstance(st, struct.Struct) else struct.Struct("<" + st)
        self.need(st.size)
        self.off += st.size
        return st.unpack_from(self.data, self.off - st.size)

    def array(self, dtype: np.dtype | str, count: int) -> np.ndarray:
        dtype = np.dtype(dtype)
        self.need(count * dtype.itemsize)
        self.off += count * dtype.itemsize
        return np.frombuffer(self.data, dtype, count, self.off - count * dtype.itemsize).copy()

    def cstring(self) -> str:
        end = self.data.find(b"\x00", self.off)
        if end < 0:
            raise _error(self.path, f"is truncated or corrupt (unterminated image name at offset {self.off})")
        raw, self.off = self.data[self.off:end], end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _error(self.path, f"has a non-UTF-8 image name at offset {end - len(raw)}") from None


def read_cameras_bin(path: Path) -> dict[int, ColmapCamera]:
    """Parse cameras.bin into {camera_id: ColmapCamera}."""
    r, cams = _BinReader(path), {}
    for _ in range(r.unpack("Q")[0]):
        cam_id, model_id, width, height = r.unpack("iiQQ")
        if model_id not in CAMERA_MODELS:
            raise _error(r.path, f"has unknown camera model id {model_id} (camera {cam_id})",
                         f"known ids are 0-{max(CAMERA_MODELS)}; {_REEXPORT}")
        name, n_params = CAMERA_MODELS[model_id]
        cam = ColmapCamera(cam_id, name, width, height, r.array("<f8", n_params))
        _add_unique(r.path, cams, cam_id, cam, "camera")
    return cams


def read_cameras_txt(path: Path) -> dict[int, ColmapCamera]:
    """Parse cameras.txt lines 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]'."""
    path, cams = Path(path), {}
    for lineno, line in _data_lines(path):
        if not (tok := line.split()):
            continue
        try:
            cam_id, model, width, height = int(tok[0]), tok[1], int(tok[2]), int(tok[3])
            params = np.array([float(v) for v in tok[4:]], np.float64)  # [num_params]
        except (ValueError, IndexError) as err:
            raise _bad_line(path, lineno, line, str(err) or "too few fields") from None
        if model not in MODEL_IDS:
            raise _bad_line(path, lineno, line, f"unknown camera model {model}")
        if len(params) != (n := CAMERA_MODELS[MODEL_IDS[model]][1]):
            raise _bad_line(path, lineno, line, f"{model} needs {n} params, got {len(params)}")
        _add_unique(path, cams, cam_id, ColmapCamera(cam_id, model, width, height, params), "camera")
    return cams


def write_cameras_bin(cameras: dict[int, ColmapCamera], path: Path) -> None:
    """Write cameras.bin in COLMAP's binary layout."""
    out = [struct.pack("<Q", len(cameras))]
    for cam in cameras.values():
        out.append(struct.pack("<iiQQ", cam.id, MODEL_IDS[cam.model], cam.width, cam.height))
        out.append(np.asarray(cam.params, "<f8").tobytes())
    Path(path).write_bytes(b"".join(out))


def write_cameras_txt(cameras: dict[int, ColmapCamera], path: Path) -> None:
    """Write cameras.txt with full float precision."""
    lines = [f"# CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]; number of cameras: {len(cameras)}"]
    for c in cameras.values():
        lines.append(" ".join([str(c.id), c.model, str(c.width), str(c.height), *_floats(c.params)]))
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_images_bin(path: Path) -> dict[int, ColmapImage]:
    """Parse images.bin into {image_id: ColmapImage}."""
    r, images = _BinReader(path), {}
    for _ in range(r.unpack("Q")[0]):
        v = r.unpack("i7di")  # image_id, qvec[4], tvec[3], camera_id
        name = r.cstring()
        rec = r.array(_XY_ID, r.unpack("Q")[0])  # [M] records (x, y, point3D_id)
        im = ColmapImage(v[0], np.array(v[1:5]), np.array(v[5:8]), v[8], name,
                         rec["xy"].astype(np.float64), rec["id"].astype(np.int64))
        _add_unique(r.path, images, im.id, im, "image")
    return images


def _parse_image_line(path: Path, lineno: int, line: str) -> tuple:
    """'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME' -> (id, qvec [4], tvec [3], camera_id, name)."""
    tok = line.split(maxsplit=9)
    try:
        if len(tok) < 10:
            raise ValueError(f"expected 10 fields, got {len(tok)}")
        nums = [float(v) for v in tok[1:8]]
        return int(tok[0]), np.array(nums[:4]), np.array(nums[4:]), int(tok[8]), tok[9].strip()
    except ValueError as err:
        raise _bad_line(path, lineno, line, str(err)) from None


def _parse_points2d(path: Path, lineno: int, line: str) -> tuple[np.ndarray, np.ndarray]:
    """'X Y POINT3D_ID ...' -> (xys [M, 2] float64, point3D_ids [M] int64)."""
    tok = line.split()
    if len(tok) % 3:
        raise _bad_line(path, lineno, line, f"{len(tok)} values is not a multiple of 3 (X Y POINT3D_ID)")
    try:
        xys = np.array([float(v) for v in tok[0::3] + tok[1::3]], np.float64).reshape(2, -1).T  # [M, 2]
        ids = np.array([int(v) for v in tok[2::3]], np.int64)  # [M]
    except (ValueError, OverflowError) as err:
        raise _bad_line(path, lineno, line, str(err)) from None
    return np.ascontiguousarray(xys), ids


def read_images_txt(path: Path) -> dict[int, ColmapImage]:
    """Parse images.txt: two lines per image (pose line, then 'X Y POINT3D_ID ...', maybe empty)."""
    path, images = Path(path), {}
    lines = iter(_data_lines(path))
    for lineno, line in lines:
        if not line.strip():
            continue
        image_id, qvec, tvec, cam_id, name = _parse_image_line(path, lineno, line)
        xys, ids = _parse_points2d(path, *next(lines, (lineno + 1, "")))
        im = ColmapImage(image_id, qvec, tvec, cam_id, name, xys, ids)
        _add_unique(path, images, image_id, im, "image")
    return images


def write_images_bin(images: dict[int, ColmapImage], path: Path) -> None:
    """Write images.bin in COLMAP's binary layout."""
    out = [struct.pack("<Q", len(images))]
    for im in images.values():
        out.append(struct.pack("<i7di", im.id, *map(float, im.qvec), *map(float, im.tvec), im.camera_id))
        rec = np.zeros(len(im.point3D_ids), dtype=_XY_ID)  # [M]
        rec["xy"], rec["id"] = im.xys, im.point3D_ids
        out.append(im.name.encode("utf-8") + b"\x00" + struct.pack("<Q", len(rec)) + rec.tobytes())
    Path(path).write_bytes(b"".join(out))


def write_images_txt(images: dict[int, ColmapImage], path: Path) -> None:
    """Write images.txt (two lines per image) with full float precision."""
    lines = ["# IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME", "# POINTS2D[] as (X Y POINT3D_ID)",
             f"# Number of images: {len(images)}"]
    for im in images.values():
        lines.append(" ".join([str(im.id), *_floats(im.qvec), *_floats(im.tvec), str(im.camera_id), im.name]))
        pairs = zip(im.xys.tolist(), im.point3D_ids.tolist())
        lines.append(" ".join(f"{x!r} {y!r} {p}" for (x, y), p in pairs))
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _make_points(path: Path, rows: list[tuple]) -> ColmapPoints:
    """Stack per-point rows (id, xyz [3], rgb [3], error) into arrays."""
    if not rows:
        return ColmapPoints.empty()
    try:
        ids = np.array([t[0] for t in rows], np.int64)  # [P]
    except OverflowError:
        raise _error(path, "has a point id beyond the int64 range (corrupt file)") from None
    return ColmapPoints(ids, np.array([t[1] for t in rows], np.float64),
                        np.array([t[2] for t in rows], np.uint8), np.array([t[3] for t in rows], np.float64))


def read_points3D_bin(path: Path) -> ColmapPoints:
    """Parse points3D.bin; tracks are skipped."""
    r, rows = _BinReader(path), []
    (num,) = r.unpack("Q")
    r.need(min(num, len(r.data)) * _POINT_FIXED.size)  # fail fast on an absurd count
    for _ in range(num):
        pid, x, y, z, cr, cg, cb, err, track_len = r.unpack(_POINT_FIXED)
        r.need(track_len * 8)
        r.off += track_len * 8  # skip (int32 image_id, int32 point2D_idx) pairs
        rows.append((pid, (x, y, z), (cr, cg, cb), err))
    return _make_points(r.path, rows)


def read_points3D_txt(path: Path) -> ColmapPoints:
    """Parse points3D.txt lines 'POINT3D_ID X Y Z R G B ERROR TRACK[]'; tracks are skipped."""
    path, rows = Path(path), []
    for lineno, line in _data_lines(path):
        if not (tok := line.split()):
            continue
        try:
            if len(tok) < 8 or (len(tok) - 8) % 2:
                raise ValueError(f"expected 8 fields plus (IMAGE_ID, POINT2D_IDX) pairs, got {len(tok)}")
            color = [int(v) for v in tok[4:7]]
            if not all(0 <= c <= 255 for c in color):
                raise ValueError("R G B must be 0-255")
            rows.append((int(tok[0]), [float(v) for v in tok[1:4]], color, float(tok[7])))
        except ValueError as err:
            raise _bad_line(path, lineno, line, str(err)) from None
    return _make_points(path, rows)


def write_points3D_bin(points: ColmapPoints, path: Path) -> None:
    """Write points3D.bin with empty tracks."""
    rec = np.zeros(len(points), dtype=np.dtype([("id", "<u8"), ("xyz", "<f8", (3,)), ("rgb", "u1", (3,)),
                                                ("err", "<f8"), ("track", "<u8")]))  # [P] 51-byte records
    rec["id"], rec["xyz"], rec["rgb"], rec["err"] = points.ids, points.xyz, points.rgb, points.error
    Path(path).write_bytes(struct.pack("<Q", len(rec)) + rec.tobytes())


def write_points3D_txt(points: ColmapPoints, path: Path) -> None:
    """Write points3D.txt with empty tracks."""
    lines = [f"# POINT3D_ID X Y Z R G B ERROR TRACK[]; number of points: {len(points)}"]
    cols = (points.ids.tolist(), points.xyz.tolist(), points.rgb.tolist(), points.error.tolist())
    for pid, p, c, e in zip(*cols):
        lines.append(f"{pid} {p[0]!r} {p[1]!r} {p[2]!r} {c[0]} {c[1]} {c[2]} {e!r}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


_READERS = {("cameras", ".bin"): read_cameras_bin, ("cameras", ".txt"): read_cameras_txt,
            ("images", ".bin"): read_images_bin, ("images", ".txt"): read_images_txt,
            ("points3D", ".bin"): read_points3D_bin, ("points3D", ".txt"): read_points3D_txt}


def _pick(sparse_dir: Path, stem: str) -> Path | None:
    """The .bin file if present, else the .txt one, else None."""
    return next((p for ext in (".bin", ".txt") if (p := sparse_dir / f"{stem}{ext}").is_file()), None)


def read_model(sparse_dir: Path) -> tuple[dict[int, ColmapCamera], dict[int, ColmapImage], ColmapPoints]:
    """Read cameras, images and points3D (.bin preferred over .txt) from a COLMAP sparse folder.

    A missing points3D file gives an empty ``ColmapPoints``; missing cameras/images is a SceneError.
    """
    sparse_dir = Path(sparse_dir)
    if not sparse_dir.is_dir():
        raise _error(sparse_dir, "is not a folder" if sparse_dir.exists() else "does not exist", _POINT_DIR)
    found = {stem: _pick(sparse_dir, stem) for stem in ("cameras", "images", "points3D")}
    for stem in ("cameras", "images"):
        if found[stem] is None:
            raise _error(sparse_dir, f"has no {stem}.bin or {stem}.txt", f"{_POINT_DIR} or {_REEXPORT}")
    cameras = _READERS["cameras", found["cameras"].suffix](found["cameras"])
    images = _READERS["images", found["images"].suffix](found["images"])
    pts = found["points3D"]
    points = _READERS["points3D", pts.suffix](pts) if pts is not None else ColmapPoints.empty()
    for im in images.values():
        if im.camera_id not in cameras:
            raise _error(found["images"], f"image {im.name!r} uses camera {im.camera_id}, "
                         f"which {found['cameras'].name} does not define")
    return cameras, images, points
