"""gsplat's simple_trainer results folder: its checkpoints, its cfg.yml and its normalised frame."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from fieldkit.errors import FieldkitError
from fieldkit.splats.gsplat_folder import (SIGNS, camera_similarity, frame_candidates,
                                           from_gsplat_frame, gsplat_dataset, gsplat_frame,
                                           latest_splats, principal_axes, read_gsplat_cfg,
                                           read_gsplat_checkpoint, result_folder_of,
                                           write_gsplat_result)
from fieldkit.splats.transform import transform_splats
from tests.data.synthetic import colmap_scene


def _params(n: int = 200, degree: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2 - 1
    return {"means": torch.randn(n, 3, generator=g), "scales": torch.randn(n, 3, generator=g) - 3,
            "quats": torch.randn(n, 4, generator=g), "opacities": torch.randn(n, generator=g) + 2,
            "sh0": torch.randn(n, 1, 3, generator=g), "shN": torch.randn(n, k, 3, generator=g)}


def _look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """[4, 4] OpenCV camera-to-world at ``eye`` looking at ``target``, image up along ``up``."""
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = np.stack([x, y, z], 1), eye
    return m


def _capture(seed: int = 0):
    """A ring of 24 cameras 3 units from ``centre`` looking at it, in a world turned away from
    their up, and sparse points on a slab under them: (c2w, points, centre, up)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    turn = q * np.sign(np.linalg.det(q))
    centre, up = np.array([2.0, -1.0, 5.0]), turn @ np.array([0.0, 0.0, 1.0])
    c2w = np.stack([_look_at(centre + turn @ np.array([3 * np.cos(a), 3 * np.sin(a), 1.0]),
                             centre, up) for a in np.linspace(0, 2 * np.pi, 24, endpoint=False)])
    slab = rng.normal(size=(3000, 3)) * np.array([2.0, 1.0, 0.1])
    return c2w, slab @ turn.T + centre, centre, up


def test_the_camera_step_turns_their_up_onto_minus_y_and_scales_their_distance_to_one():
    c2w, _, _, up = _capture()
    m = camera_similarity(c2w)
    s = np.cbrt(np.linalg.det(m[:3, :3]))
    assert np.allclose(m[:3, :3] / s @ up, [0, -1, 0], atol=1e-9)
    eyes, fwd = c2w[:, :3, 3], c2w[:, :3, 2]
    nearest = eyes - (eyes * fwd).sum(-1, keepdims=True) * fwd   # on each axis, to the origin
    focus = np.median(nearest @ (m[:3, :3] / s).T, axis=0)       # their median, up turned
    assert np.allclose(m[:3, :3] @ (m[:3, :3].T / s) @ focus + m[:3, 3], 0, atol=1e-9)
    eyes = c2w[:, :3, 3] @ m[:3, :3].T + m[:3, 3]
    assert np.median(np.linalg.norm(eyes, axis=1)) == pytest.approx(1.0)


def test_the_point_step_is_a_rotation_onto_the_principal_axes_largest_first():
    _, points, _, _ = _capture()
    m = principal_axes(points)
    assert np.linalg.det(m[:3, :3]) == pytest.approx(1.0)
    moved = points @ m[:3, :3].T + m[:3, 3]
    cov = np.cov(moved, rowvar=False)
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 1e-9
    assert cov[0, 0] > cov[1, 1] > cov[2, 2]
    assert np.allclose(np.median(moved @ m[:3, :3], axis=0), 0, atol=1e-9)   # median-centred


def test_the_four_candidates_differ_by_a_proper_sign_matrix():
    c2w, points, _, _ = _capture()
    cands = frame_candidates(c2w, points)
    assert len(cands) == len(SIGNS) == 4
    for c in cands:
        s = np.cbrt(np.linalg.det(c[:3, :3]))
        assert s > 0 and np.allclose(c[:3, :3] @ c[:3, :3].T, s * s * np.eye(3))
        assert np.allclose(cands[0][:3, :3] @ c[:3, :3].T / (s * s), np.diag(np.diag(
            cands[0][:3, :3] @ c[:3, :3].T / (s * s))), atol=1e-9)
    assert len({tuple(np.round(c.ravel(), 6)) for c in cands}) == 4


@pytest.mark.parametrize("k", range(4))
def test_the_frame_is_found_from_the_sparse_points_and_inverted(k, tmp_path):
    c2w, points, _, _ = _capture()
    scene = colmap_scene(tmp_path / "scene", points=points)
    from fieldkit.data.scene import read_raw

    raw = read_raw(scene)
    truth = frame_candidates(raw.c2w, raw.points)[k]
    world = _params(1500)
    world["means"] = torch.from_numpy(points[:1500]).float() + 0.01 * torch.randn(1500, 3)
    s = float(np.cbrt(np.linalg.det(truth[:3, :3])))
    moved = transform_splats(world, torch.from_numpy(truth[:3, :3] / s), s,
                             torch.from_numpy(truth[:3, 3]))
    found, fit = gsplat_frame(moved, scene)
    assert np.allclose(found, truth)
    assert fit < 0.02
    back = from_gsplat_frame(moved, found)
    assert torch.allclose(back["means"], world["means"], atol=1e-4)
    assert torch.allclose(back["scales"], world["scales"], atol=1e-4)


def test_a_scene_without_sparse_points_has_no_gsplat_frame():
    from tests.conftest import DEMO_SCENE

    with pytest.raises(FieldkitError, match="no sparse points"):
        gsplat_frame(_params(), DEMO_SCENE)


def test_a_checkpoint_round_trips_and_its_ranks_are_joined(tmp_path):
    params = _params(100, degree=2)
    ckpt = write_gsplat_result(tmp_path / "res", params, 6999, "data/garden", 4)
    assert ckpt == tmp_path / "res" / "ckpts" / "ckpt_6999_rank0.pt"
    back = read_gsplat_checkpoint(ckpt)
    for key, value in params.items():
        assert torch.equal(back[key], value), key
    other = _params(30, degree=2, seed=1)
    torch.save({"step": 6999, "splats": other}, ckpt.parent / "ckpt_6999_rank1.pt")
    joined = read_gsplat_checkpoint(ckpt)
    assert len(joined["means"]) == 130 and torch.equal(joined["means"][100:], other["means"])
    assert latest_splats(tmp_path / "res") == ckpt
    assert result_folder_of(ckpt) == (tmp_path / "res").resolve()
    assert result_folder_of(tmp_path / "res") == (tmp_path / "res").resolve()
    assert result_folder_of(tmp_path) is None


def test_the_newest_of_checkpoints_and_plys_is_taken(tmp_path):
    from fieldkit.splats.ply import write_splat_ply

    write_gsplat_result(tmp_path, _params(), 6999, "data")
    (tmp_path / "ply").mkdir()
    write_splat_ply(tmp_path / "ply" / "point_cloud_6999.ply", _params())
    assert latest_splats(tmp_path).name == "ckpt_6999_rank0.pt"   # a tie: the checkpoint
    write_splat_ply(tmp_path / "ply" / "point_cloud_29999.ply", _params())
    assert latest_splats(tmp_path).name == "point_cloud_29999.ply"
    torch.save({"step": 29999, "splats": _params()}, tmp_path / "ckpts" / "ckpt_29999_rank1.pt")
    assert latest_splats(tmp_path).name == "point_cloud_29999.ply"  # rank 0 names a step


class _Code:
    """Something a tensors-only load must refuse."""


@pytest.mark.parametrize("content, message", [
    (b"not a checkpoint at all", "loads as tensors only"),
    ("code", "loads as tensors only"),
    ({"step": 1}, "no 'splats' entry"),
    ({"step": 1, "splats": {"means": torch.zeros(2, 3)}}, "lack scales, quats"),
    ({"step": 1, "splats": {"features": torch.zeros(2, 32), "colors": torch.zeros(2, 3),
                            "means": torch.zeros(2, 3)}}, "--app_opt"),
    ({"step": 1, "splats": {**_params(4), "means": torch.zeros(4, 2)}}, "has shape"),
])
def test_malformed_checkpoints_give_one_line_errors(tmp_path, content, message):
    assert_one_line_error(read_gsplat_checkpoint, tmp_path / "ckpt_1_rank0.pt", content, message)


def assert_one_line_error(reader, path, content, message: str) -> None:
    """``reader(path)`` with ``path`` holding ``content`` (bytes as they are, "code" a pickle of
    an object, else ``torch.save``d) fails with one line matching ``message``."""
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "code":
        path.write_bytes(pickle.dumps({"splats": _Code(), "pipeline": _Code()}))
    else:
        torch.save(content, path)
    with pytest.raises(FieldkitError, match=message) as err:
        reader(path)
    assert "\n" not in str(err.value)


GSPLAT_CFG_TEXT = """\
app_opt: false
batch_size: 1
bilateral_grid_shape: !!python/tuple
- 16
- 16
- 8
data_dir: {data_dir}
data_factor: 2
eval_steps:
- 7000
- 30000
normalize_world_space: true
result_dir: {result_dir}
strategy: !!python/object:gsplat.strategy.default.DefaultStrategy
  absgrad: false
  prune_opa: 0.005
  refine_every: 100
"""


def test_cfg_yml_with_python_tags_reads_as_plain_values(tmp_path):
    (tmp_path / "cfg.yml").write_text(GSPLAT_CFG_TEXT.format(data_dir="data/x", result_dir="r"))
    cfg = read_gsplat_cfg(tmp_path)
    assert cfg["data_factor"] == 2 and cfg["normalize_world_space"] is True
    assert cfg["bilateral_grid_shape"] == [16, 16, 8]
    assert cfg["strategy"] == {"absgrad": False, "prune_opa": 0.005, "refine_every": 100,
                               "__class__": "gsplat.strategy.default.DefaultStrategy"}
    (tmp_path / "cfg.yml").write_text("data_dir: !!python/object/apply:pathlib.PosixPath\n"
                                      "- /\n- data\n- garden\n")
    assert read_gsplat_cfg(tmp_path)["data_dir"] == "/data/garden"


@pytest.mark.parametrize("text, message", [("a: [1, 2\n", "not readable YAML"),
                                           ("- 1\n- 2\n", "holds no settings")])
def test_malformed_cfg_yml_gives_one_line_errors(tmp_path, text, message):
    (tmp_path / "cfg.yml").write_text(text)
    with pytest.raises(FieldkitError, match=message) as err:
        read_gsplat_cfg(tmp_path)
    assert "\n" not in str(err.value)


def test_the_dataset_is_found_where_the_trainer_ran(tmp_path):
    scene = colmap_scene(tmp_path / "work" / "data" / "scene")
    folder = tmp_path / "work" / "results" / "scene"
    folder.mkdir(parents=True)
    (folder / "cfg.yml").write_text(GSPLAT_CFG_TEXT.format(data_dir="data/scene",
                                                           result_dir="results/scene"))
    assert gsplat_dataset(folder, read_gsplat_cfg(folder)) == (scene.resolve(), 2)
    cfg = read_gsplat_cfg(folder)
    assert gsplat_dataset(folder, {**cfg, "data_dir": str(scene)}) == (scene, 2)
    assert gsplat_dataset(folder, {**cfg, "data_dir": "data/elsewhere"}) is None
    assert gsplat_dataset(folder, {**cfg, "data_dir": str(Path(scene) / "images")}) is None
