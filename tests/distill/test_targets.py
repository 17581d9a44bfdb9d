"""The ray bank of a teacher that renders whole views (splats): only as many views as the bank
needs are rendered, and every ray is one of their pixels with its rendered values."""
from __future__ import annotations

import torch

from fieldkit.data.cameras import Cameras
from fieldkit.distill import targets


class ViewTeacher:
    """Renders whole views: rgb = the pixel's ray direction, depth = the view's index."""

    is_splat = True

    def __init__(self, cameras: Cameras):
        self.cameras, self.rendered = cameras, []

    def render_view(self, camera: Cameras) -> dict[str, torch.Tensor]:
        i = int(torch.nonzero((self.cameras.c2w == camera.c2w[0]).all(-1).all(-1))[0])
        self.rendered.append(i)
        _, d = camera.image_rays(0)
        h, w = d.shape[:2]
        return {"rgb": d, "depth": torch.full((h, w, 1), float(i)),
                "alpha": torch.ones(h, w, 1)}


def _cameras(n: int, size: int = 20) -> Cameras:
    c2w = torch.eye(4).repeat(n, 1, 1)
    c2w[:, 0, 3] = torch.arange(n, dtype=torch.float32)   # distinct positions
    K = torch.tensor([[20.0, 0, size / 2], [0, 20.0, size / 2], [0, 0, 1]]).repeat(n, 1, 1)
    sizes = torch.full((n,), size)
    return Cameras(c2w, K, sizes, sizes)


def test_view_bank_renders_only_the_views_it_needs():
    cams = _cameras(200)                      # 400 pixels a view
    teacher = ViewTeacher(cams)
    bank = targets.build_ray_bank(teacher, cams, 4000, torch.Generator().manual_seed(0))
    # 4000 rays keeping a quarter of each view's pixels: 40 views, not 200
    assert teacher.rendered == list(range(40))
    assert len(bank) == 4000
    views = bank.depth[:, 0].long()
    assert views.unique().numel() == 40
    # each ray is its view's pixel: origin of that camera, the direction the teacher rendered
    torch.testing.assert_close(bank.origins[:, 0], views.float())
    torch.testing.assert_close(bank.rgb, bank.dirs)
    # a small bank still sees VIEW_BANK_MIN_VIEWS views; never more views than given
    teacher = ViewTeacher(cams)
    targets.build_ray_bank(teacher, cams, 100, torch.Generator().manual_seed(0))
    assert len(teacher.rendered) == targets.VIEW_BANK_MIN_VIEWS
    teacher = ViewTeacher(cams[:10])
    targets.build_ray_bank(teacher, cams[:10], 3000, torch.Generator().manual_seed(0))
    assert teacher.rendered == list(range(10))


def test_error_guided_sampling_draws_rays_in_proportion_to_their_error():
    n = 1000
    bank = targets.RayBank(torch.zeros(n, 3), torch.zeros(n, 3), torch.zeros(n, 3),
                           torch.zeros(n, 1), torch.ones(n, 1))
    torch.manual_seed(0)
    assert len(bank.sample(64, guided=0.5)["idx"]) == 64   # no error map yet: all uniform
    error = torch.full((n,), 1e-4)
    error[:10] = 1.0                   # ten hard rays carry nearly all of the error
    bank.record_error(torch.arange(n), error)
    idx = bank.sample(20000, guided=0.5)["idx"]
    hard = float((idx < 10).float().mean())
    assert 0.45 < hard < 0.55          # the guided half (0.5 * ~0.99) plus 1% of the uniform
    assert float((bank.sample(20000)["idx"] < 10).float().mean()) < 0.02   # guided=0: uniform
    # rays not drawn yet weigh the mean error of those that were
    bank.error[500:] = float("nan")
    idx = bank.sample(20000, guided=1.0)["idx"]
    unseen = float((idx >= 500).float().mean())
    mean = float(error[:500].mean())
    assert abs(unseen - 500 * mean / (500 * mean + float(error[:500].sum()))) < 0.02


def test_a_splat_students_start_follows_the_pixels_of_its_views():
    from types import SimpleNamespace

    from fieldkit.distill.splat import initial_count

    def views(w, h):
        cams = SimpleNamespace(width=torch.tensor([w]), height=torch.tensor([h]))
        return SimpleNamespace(scene=SimpleNamespace(cameras=cams))

    assert initial_count(50000, 0.5, views(200, 200)) == 20000       # lego at 200x200
    assert initial_count(50000, 0.5, views(160, 90)) == 7200         # beer at 1/8
    assert initial_count(50000, 0.5, views(800, 800)) == 50000       # init-points caps
    assert initial_count(50000, 0.0, views(160, 90)) == 50000        # 0: no per-pixel limit


def test_target_cameras_mix_training_cameras_in_as_pinholes():
    from fieldkit.data.cameras import Cameras
    from fieldkit.distill.views import novel_cameras, sphere_cameras, target_cameras

    base = sphere_cameras(12, bound=1.0, size=64)
    dist = torch.zeros(12, 6)
    dist[:, 0] = 0.1
    cams = Cameras(base.c2w, base.K, base.width, base.height, dist)
    mixed = target_cameras(cams, 10, seed=3, scale=0.5, train_share=0.4)
    assert len(mixed) == 10 and mixed.distortion is None
    assert (mixed.width == 32).all() and torch.allclose(mixed.K[:, 0, 0], cams.K[0, 0, 0] / 2)
    at_train = [i for i in range(10)
                if any(torch.equal(mixed.c2w[i], cams.c2w[j]) for j in range(12))]
    assert len(at_train) == 4
    assert at_train[0] < 3 and at_train[-1] > 6  # spread through the list, not in one block
    # the first and the last training camera are among them (evenly spaced)
    assert torch.equal(mixed.c2w[at_train[0]], cams.c2w[0])
    assert torch.equal(mixed.c2w[at_train[-1]], cams.c2w[11])
    # share 0 is novel_cameras; share 1 uses every training camera once, no more
    assert torch.equal(target_cameras(cams, 5, seed=3).c2w, novel_cameras(cams, 5, seed=3).c2w)
    assert len(target_cameras(cams, 20, seed=3, train_share=1.0)) == 20
    every = target_cameras(cams, 12, seed=3, train_share=1.0)   # no novel view left
    assert torch.equal(every.c2w, cams.c2w) and every.distortion is None


def test_a_saved_distill_config_keeps_its_views_across_the_new_default():
    from fieldkit.distill.config import DistillConfig

    old = DistillConfig().to_dict()
    del old["train_view_share"]          # saved before the field existed: novel views only
    assert DistillConfig.from_saved(old).train_view_share == 0.0
    new = DistillConfig(train_view_share=0.5).to_dict()
    assert DistillConfig.from_saved(new) == DistillConfig(train_view_share=0.5)
    assert DistillConfig().train_view_share == 1.0


def test_a_splat_teachers_bank_holds_four_times_the_rays_of_a_field_teachers():
    from fieldkit.distill.config import DistillConfig

    default = DistillConfig()
    assert default.bank_rays_for(splat_teacher=True) == 1 << 20
    assert default.bank_rays_for(splat_teacher=False) == 1 << 18
    assert DistillConfig(bank_rays=4096).bank_rays_for(splat_teacher=True) == 4096
    # a saved config keeps the size it was saved with
    saved = DistillConfig(bank_rays=1 << 18).to_dict()
    assert DistillConfig.from_saved(saved).bank_rays_for(True) == 1 << 18
