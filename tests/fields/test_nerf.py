"""VolumeModel (hash-grid model): density, parameter groups and gradients of the field."""
import torch

from fieldkit.data.scene import load_scene
from fieldkit.encoders.hashgrid import HashGridConfig
from fieldkit.fields.models import HashGridModel, HashGridModelConfig
from fieldkit.fields.nerf import RenderConfig
from tests.conftest import DEMO_SCENE


def _small() -> HashGridModel:
    torch.manual_seed(0)
    cfg = HashGridModelConfig(
        encoder=HashGridConfig(num_levels=4, log2_table_size=12, max_resolution=64),
        render=RenderConfig(grid_resolution=16, render_steps=64))
    model = HashGridModel(cfg)
    with torch.no_grad():  # a non-trivial field
        model.field.encoder.table.normal_(0, 1.0)
    return model


def test_save_load_round_trip_renders_identically(tmp_path):
    model = _small()
    for step in range(0, 64, 16):
        model.update_grid(step)
    cams = load_scene(DEMO_SCENE, downscale=4).cameras[3]
    before = model.render(cams, torch.ones(3))
    model.save(tmp_path)
    loaded = HashGridModel.load(tmp_path)
    after = loaded.render(cams, torch.ones(3))
    for key in ("rgb", "depth", "alpha"):
        assert torch.equal(before[key], after[key]), key
    assert before["rgb"].shape == (24, 24, 3)
    assert torch.equal(loaded.grid.binary, model.grid.binary)
    assert loaded.config == model.config


def test_density_is_zero_outside_the_bound_and_positive_inside():
    model = _small()
    inside = torch.rand(100, 3) * 1.8 - 0.9
    outside = inside.sign() * 1.1
    assert (model.density(inside) > 0).all()
    assert (model.density(outside) == 0).all()


def test_param_groups_cover_every_parameter_once():
    model = _small()
    groups = model.param_groups(1e-2)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.field.parameters())
    assert {g["name"]: g["weight_decay"] for g in groups} == {"encoder": 0.0, "decoder": 1e-6}


def test_render_rays_gradients_reach_every_parameter_group():
    model = _small()
    o = torch.tensor([[0.0, 0.0, -3.0]]).repeat(64, 1)
    d = torch.nn.functional.normalize(torch.randn(64, 3) * 0.05 + torch.tensor([0, 0, 1.0]), dim=-1)
    out = model.render_rays(o, d, torch.ones(3), stratified=True)
    assert out["num_samples"] > 0
    out["rgb"].sum().backward()
    assert model.field.encoder.table.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.field.color_net.parameters())


def test_update_grid_without_warm_up_evaluates_a_sample_of_the_cells():
    """Warm-up refreshes evaluate every cell; without warm-up (distillation: the grid starts
    from the teacher's) step 0 already evaluates a quarter of them plus occupied ones."""
    counts = []
    for warmup in (256, 0):
        model = _small()
        density = model.field.density
        seen = []
        model.field.density = lambda p, f=density, s=seen: (s.append(len(p)), f(p))[1]
        model.update_grid(0, warmup_steps=warmup)
        counts.append(sum(seen))
    cells = 16 ** 3
    assert counts[0] == cells
    assert cells // 4 <= counts[1] <= cells // 2
