"""The report judges teacher and student against the same images."""
from __future__ import annotations

import pytest
import torch

from fieldkit.data.scene import load_scene
from fieldkit.distill.report import versus_photos
from fieldkit.distill.run import _gt_scene
from tests.data import synthetic


@pytest.fixture(scope="module")
def distorted(tmp_path_factory):
    return synthetic.ngp_scene(tmp_path_factory.mktemp("ngp") / "s", k1=0.05)


@pytest.mark.parametrize("kinds", [["splat", "hashgrid"], ["hashgrid", "splat"]])
def test_a_splat_on_either_side_puts_both_on_the_undistorted_photos(distorted, kinds):
    scene, which = _gt_scene({"scene": str(distorted), "downscale": 1}, kinds)
    assert which == "undistorted" and scene.cameras.distortion is None
    raw = load_scene(distorted)
    test = int(raw.split("test")[0])
    # resampled, not the photo as shot
    assert not torch.equal(scene.image(test), raw.image(test))


def test_fields_alone_keep_the_photos_as_shot(distorted, tmp_path):
    scene, which = _gt_scene({"scene": str(distorted), "downscale": 1}, ["hashgrid", "mlp"])
    assert which == "as shot" and scene.cameras.distortion is not None
    pinhole = synthetic.ngp_scene(tmp_path / "p", k1=0.0)
    scene, which = _gt_scene({"scene": str(pinhole), "downscale": 1}, ["splat", "hashgrid"])
    assert which == "as shot"


def test_no_scene_on_disk_means_no_photos(tmp_path):
    assert _gt_scene({"scene": str(tmp_path / "gone"), "downscale": 1}, ["splat"]) is None
    assert _gt_scene({}, ["hashgrid"]) is None


class _Flat(torch.nn.Module):
    """Renders one colour everywhere."""

    def __init__(self, value: float):
        super().__init__()
        self.value = torch.nn.Parameter(torch.tensor(value))

    def render(self, camera, background):
        h, w = int(camera.height[0]), int(camera.width[0])
        return {"rgb": self.value.detach().expand(h, w, 3)}


def test_student_and_teacher_are_scored_on_the_same_views(distorted):
    scene, _ = _gt_scene({"scene": str(distorted), "downscale": 1}, ["splat", "hashgrid"])
    out = versus_photos({"teacher": _Flat(0.5), "student": _Flat(0.6)}, scene, 2)
    assert out["views"] == 2
    assert out["student_vs_teacher_psnr"] == pytest.approx(20.0, abs=1e-3)  # 0.1 apart
    assert out["teacher"]["psnr"] != out["student"]["psnr"]
