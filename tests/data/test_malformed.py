"""Bad input: every case ends in ONE line that names the file, and a non-zero exit."""
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fieldkit.cli import main
from fieldkit.data.formats import colmap_io
from fieldkit.data.scene import load_scene
from fieldkit.errors import SceneError
from tests.data import synthetic


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _missing_dir(tmp):
    return tmp / "nope", "does not exist"


def _not_a_scene(tmp):
    (tmp / "photos").mkdir()
    (tmp / "photos" / "a.jpg").write_bytes(b"")
    return tmp / "photos", "is not a scene folder"


def _corrupt_blender_json(tmp):
    root = synthetic.blender_copy(tmp / "s")
    text = (root / "transforms_train.json").read_text()
    (root / "transforms_train.json").write_text(text[: len(text) // 2])
    return root, "transforms_train.json is not valid JSON"


def _corrupt_ngp_json(tmp):
    root = synthetic.ngp_scene(tmp / "s")
    (root / "transforms.json").write_text("{\"frames\": [")
    return root, "transforms.json is not valid JSON"


def _truncated_cameras_bin(tmp):
    root = synthetic.colmap_scene(tmp / "s")
    cams = root / "sparse" / "0" / "cameras.bin"
    cams.write_bytes(cams.read_bytes()[:20])
    return root, "cameras.bin is truncated"


def _truncated_images_bin(tmp):
    root = synthetic.colmap_scene(tmp / "s")
    images = root / "sparse" / "0" / "images.bin"
    images.write_bytes(images.read_bytes()[:-7])
    return root, "images.bin is truncated"


def _missing_images_bin(tmp):
    root = synthetic.colmap_scene(tmp / "s")
    (root / "sparse" / "0" / "images.bin").unlink()
    return root, "has no images.bin or images.txt"


def _missing_blender_image(tmp):
    root = synthetic.blender_copy(tmp / "s")
    (root / "train" / "r_3.png").unlink()
    return root, "r_3.png (listed in transforms_train.json frame 3) does not exist"


def _missing_colmap_image(tmp):
    root = synthetic.colmap_scene(tmp / "s")
    (root / "images" / "0004.png").unlink()
    return root, "0004.png (registered in images.bin) does not exist"


def _wrong_image_size(tmp):
    root = synthetic.ngp_scene(tmp / "s", w=192, h=192)
    return root, "is 96x96 but its intrinsics are for 192x192"


def _colmap_wrong_image_size(tmp):
    root = synthetic.colmap_scene(tmp / "s")
    cams = colmap_io.read_cameras_bin(root / "sparse/0/cameras.bin")
    cams[1].width = 100
    colmap_io.write_cameras_bin(cams, root / "sparse/0/cameras.bin")
    return root, "is 96x96 but its intrinsics are for 100x96"


def _no_usable_frames(tmp):
    root = synthetic.ngp_scene(tmp / "s")
    shutil.rmtree(root / "images")
    return root, "none of its 12 frames has an image on disk"


def _empty_blender_train(tmp):
    root = synthetic.blender_copy(tmp / "s")
    _edit_json(root / "transforms_train.json", lambda d: d.update(frames=[]))
    return root, "transforms_train.json lists no frames"


def _unsupported_colmap_model(tmp):
    root = synthetic.colmap_scene(tmp / "s", model="FULL_OPENCV")
    return root, "COLMAP model FULL_OPENCV, which is not supported"


def _unsupported_ngp_fisheye(tmp):
    root = synthetic.ngp_scene(tmp / "s", camera_model="OPENCV_FISHEYE")
    return root, "camera model OPENCV_FISHEYE is not supported"


def _nan_pose(tmp):
    root = synthetic.ngp_scene(tmp / "s")
    _edit_json(root / "transforms.json",
               lambda d: d["frames"][2]["transform_matrix"][0].__setitem__(3, math.nan))
    return root, "frame 2: the camera pose contains NaN"


def _singular_pose(tmp):
    root = synthetic.blender_copy(tmp / "s")
    _edit_json(root / "transforms_train.json",
               lambda d: d["frames"][1].update(transform_matrix=[[0, 0, 0, 1]] * 3 + [[0, 0, 0, 1]]))
    return root, "frame 1: the camera pose is singular"


def _corrupt_image(tmp):
    root = synthetic.blender_copy(tmp / "s")
    (root / "val" / "r_1.png").write_bytes(b"\x89PNG not really")
    return root, "r_1.png is not a readable image"


def _missing_focal(tmp):
    root = synthetic.ngp_scene(tmp / "s")
    _edit_json(root / "transforms.json", lambda d: [d.pop(k) for k in ("fl_x", "fl_y")])
    return root, "has no focal length"


CASES = [_missing_dir, _not_a_scene, _corrupt_blender_json, _corrupt_ngp_json,
         _truncated_cameras_bin, _truncated_images_bin, _missing_images_bin,
         _missing_blender_image, _missing_colmap_image, _wrong_image_size,
         _colmap_wrong_image_size, _no_usable_frames, _empty_blender_train,
         _unsupported_colmap_model, _unsupported_ngp_fisheye, _nan_pose, _singular_pose,
         _corrupt_image, _missing_focal]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__.strip("_"))
def test_load_scene_raises_one_line(tmp_path, case):
    root, expected = case(tmp_path)
    with pytest.raises(SceneError) as info:
        load_scene(root)
    message = str(info.value)
    assert "\n" not in message
    assert expected in message, message


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__.strip("_"))
def test_scene_info_prints_one_line_and_fails(tmp_path, capsys, case):
    root, expected = case(tmp_path)
    code = main(["scene", "info", str(root)])
    out, err = capsys.readouterr()
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err
    assert "Traceback" not in err + out


def test_bad_downscale_is_one_line(tmp_path):
    with pytest.raises(SceneError, match="--downscale must be a positive integer"):
        load_scene(synthetic.blender_copy(tmp_path / "s"), downscale=0)


def test_console_script_never_shows_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fieldkit.cli", "scene", "info",
                           str(tmp_path / "missing")], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "does not exist" in proc.stderr
