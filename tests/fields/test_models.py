"""Every registered model speaks the representation protocol: render, density, save/load,
num_params, describe; presets and config.json round-trips rebuild the same model."""
import dataclasses
import json

import pytest
import torch

from fieldkit.data.scene import load_scene
from fieldkit.errors import FieldkitError
from fieldkit.fields import registry
from fieldkit.fields.registry import (build_model, changed_fields, config_from_dict, merge,
                                      model_class, preset_config)
from tests.conftest import DEMO_SCENE

KINDS = ["hashgrid", "triplane", "mlp"]
SMALL = {  # small but non-trivial versions, so the tests stay fast
    "hashgrid": {"encoder": {"num_levels": 4, "log2_table_size": 12, "max_resolution": 64}},
    "triplane": {"encoder": {"resolutions": (8, 16), "features": 4}},
    "mlp": {"encoder": {"num_frequencies": 4}, "decoder": {"hidden_dim": 32}},
}


def _model(kind: str):
    torch.manual_seed(0)
    config = merge(preset_config(kind), {**SMALL[kind],
                                        "render": {"grid_resolution": 16, "render_steps": 64}})
    model = build_model(kind, bound=1.0, config=config)
    with torch.no_grad():  # a non-trivial field: perturb every parameter
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    for step in range(0, 64, 16):
        model.update_grid(step)
    return model


def test_all_volumetric_models_are_registered():
    registry._ensure_builtin()
    assert set(KINDS) <= set(registry.MODELS)
    for kind in KINDS:
        assert registry.MODELS[kind].kind == kind


@pytest.mark.parametrize("kind", KINDS)
def test_protocol_render_density_and_description(kind):
    model = _model(kind)
    cams = load_scene(DEMO_SCENE, downscale=8).cameras[2]
    out = model.render(cams, torch.ones(3))
    assert set(out) >= {"rgb", "depth", "alpha"}
    assert out["rgb"].shape == (12, 12, 3) and out["alpha"].shape == (12, 12, 1)
    assert out["depth"].shape == (12, 12, 1)
    assert torch.isfinite(out["rgb"]).all() and (out["rgb"] >= 0).all() and (out["rgb"] <= 1).all()
    sigma = model.density(torch.rand(50, 3) * 2 - 1)
    assert sigma.shape == (50,) and (sigma >= 0).all()
    n = sum(p.numel() for p in model.parameters())
    assert model.num_params == n > 0
    text = model.describe()
    assert text.startswith(f"{kind} model: {n:,} parameters") and "encoder" in text


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_renders_identically(kind, tmp_path):
    model = _model(kind)
    cams = load_scene(DEMO_SCENE, downscale=8).cameras[5]
    before = model.render(cams, torch.zeros(3))
    model.save(tmp_path)
    loaded = model_class(kind).load(tmp_path)
    assert type(loaded) is type(model) and loaded.config == model.config
    after = loaded.render(cams, torch.zeros(3))
    for key in ("rgb", "depth", "alpha"):
        assert torch.equal(before[key], after[key]), key
    assert torch.equal(loaded.grid.binary, model.grid.binary)


@pytest.mark.parametrize("kind", KINDS)
def test_config_round_trips_through_json(kind):
    config = preset_config(kind, "quality")
    again = config_from_dict(type(config), json.loads(json.dumps(dataclasses.asdict(config))))
    assert again == config


@pytest.mark.parametrize("kind", KINDS)
def test_presets_differ_and_every_config_field_is_documented(kind):
    cls = model_class(kind)
    assert {"fast", "quality"} <= set(cls.presets)
    fast, default, quality = (preset_config(kind, p) for p in ("fast", "default", "quality"))
    assert fast != default != quality
    n = [build_model(kind, 1.0, p).num_params for p in ("fast", "default", "quality")]
    assert n[0] <= n[1] < n[2]
    import ast
    import inspect
    for config_cls in {type(default), type(default.encoder), type(default.decoder),
                       type(default.render)}:
        tree = ast.parse(inspect.getsource(config_cls))
        body = tree.body[0].body
        for i, node in enumerate(body):
            if isinstance(node, ast.AnnAssign):
                doc = body[i + 1] if i + 1 < len(body) else None
                assert isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant), \
                    f"{config_cls.__name__}.{node.target.id} has no docstring"


def test_unknown_model_and_preset_are_one_line_errors():
    with pytest.raises(FieldkitError, match="unknown model 'nerf'; choose one of"):
        model_class("nerf")
    with pytest.raises(FieldkitError, match="has no preset 'huge'"):
        preset_config("triplane", "huge")
    with pytest.raises(FieldkitError, match="has no field"):
        config_from_dict(type(preset_config("mlp")), {"colour": 1})


def test_command_line_overrides_apply_on_top_of_a_preset():
    default = preset_config("hashgrid")
    given = merge(default, {"encoder": {"num_levels": 8}})
    assert changed_fields(given, default) == {"encoder": {"num_levels": 8}}
    config = merge(preset_config("hashgrid", "quality"), changed_fields(given, default))
    assert config.encoder.num_levels == 8 and config.encoder.log2_table_size == 19


def test_triplane_regulariser_enters_the_loss_and_mlp_has_none():
    tri = _model("triplane")
    reg = tri.regularization()
    assert reg is not None and reg > 0
    reg.backward()
    assert all(p.grad is not None for p in tri.field.encoder.parameters())
    assert _model("mlp").regularization() is None


@pytest.mark.parametrize("kind", KINDS)
def test_single_pass_inference_matches_the_pruned_two_pass_render(kind):
    """Without gradients the field runs once on every occupied sample; the composite must equal
    the training-style render (density pre-pass, then early stop and alpha_thre) within the
    early-stop tolerance."""
    from fieldkit.render.volume import march, midpoints, render_rays
    model = _model(kind)
    o = torch.tensor([[0.0, 0.0, -3.0]]).repeat(256, 1)
    d = torch.nn.functional.normalize(torch.randn(256, 3) * 0.2 + torch.tensor([0, 0, 1.0]), dim=-1)
    rc = model.config.render
    with torch.no_grad():
        single = model.render_rays(o, d, torch.ones(3))
        samples = march(o, d, model.grid, step_size=rc.step_size, aabb=model.aabb,
                        sigma_fn=lambda a, b, r: model.field.density(midpoints(o, d, a, b, r)),
                        early_stop_eps=rc.early_stop_eps, alpha_thre=rc.alpha_thre)
        two = render_rays(lambda a, b, r: model.field(midpoints(o, d, a, b, r), d[r]), samples,
                          len(o), torch.ones(3))
    assert single["alpha"].max() > 0.5  # the rays do hit something
    assert samples.t_starts.numel() < single["num_samples"]
    for key in ("rgb", "alpha"):
        torch.testing.assert_close(single[key], two[key], atol=2e-4, rtol=0)


def test_unbounded_scenes_get_cone_steps_and_cascades_render_consistently(tmp_path):
    """A scene whose bound is > 1 gets cone stepping by default; bounded scenes, ``unbounded``
    off, and saved configs from before these fields keep uniform steps. A cascaded model
    (finest level over [-1, 1]^3) renders as ``march_cone`` + composite, and round-trips."""
    from fieldkit.fields.nerf import UNBOUNDED_CONE_ANGLE
    from fieldkit.render.cone import march_cone
    from fieldkit.render.volume import midpoints, render_rays
    small = merge(preset_config("hashgrid"), {**SMALL["hashgrid"],
                                              "render": {"grid_resolution": 8}})
    auto = build_model("hashgrid", bound=4.0, config=small).config.render
    assert (auto.cascades, auto.cone_angle) == (1, UNBOUNDED_CONE_ANGLE) and auto.cone_marching
    for bounded in (build_model("hashgrid", bound=1.0, config=small),
                    build_model("hashgrid", bound=4.0,
                                config=merge(small, {"render": {"unbounded": False}}))):
        assert bounded.grid.levels == 1 and not bounded.config.render.cone_marching
    model = build_model("hashgrid", bound=4.0, config=merge(
        small, {"render": {"cascades": 3, "cone_angle": 1 / 256}}))
    rc = model.config.render
    assert (rc.cascades, rc.cone_angle, rc.finest_bound) == (3, 1 / 256, 1.0)
    assert model.grid.levels == 3 and model.grid.aabb.tolist() == [-1, -1, -1, 1, 1, 1]
    assert torch.allclose(model.grid.level_aabbs[-1], model.aabb)
    assert rc.max_step == 1.0 and "8^3 x 3 levels" in model.describe()
    legacy = dataclasses.asdict(model.config)
    for key in ("cascades", "cone_angle", "unbounded"):
        del legacy["render"][key]
    assert not registry.model_from_config("hashgrid", legacy).config.render.cone_marching

    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    for step in range(0, 64, 16):
        model.update_grid(step)
    assert not model.grid.binary[0].all()   # some cells of the finest level are empty
    model.grid.binary[1:] = True             # the random field is faint out there
    o = torch.tensor([[0.0, 0.0, -0.9]]).repeat(128, 1)
    d = torch.nn.functional.normalize(torch.randn(128, 3) * 0.3 + torch.tensor([0, 0, 1.0]), dim=-1)
    with torch.no_grad():
        out = model.render_rays(o, d, torch.ones(3))
        samples = march_cone(o, d, model.grid, step_size=rc.step_size, cone_angle=rc.cone_angle,
                             max_step=rc.max_step, aabb=model.aabb,
                             sigma_fn=lambda a, b, r: model.field.density(midpoints(o, d, a, b, r)),
                             early_stop_eps=rc.early_stop_eps, alpha_thre=rc.alpha_thre)
        ref = render_rays(lambda a, b, r: model.field(midpoints(o, d, a, b, r), d[r]), samples,
                          len(o), torch.ones(3))
    far = samples.t_mids > 2.0          # samples in levels 1 and 2 too
    assert out["alpha"].max() > 0.1 and bool(far.any()) and bool((~far).any())
    for key in ("rgb", "alpha"):
        torch.testing.assert_close(out[key], ref[key], atol=2e-4, rtol=0)
    model.save(tmp_path)
    loaded = model_class("hashgrid").load(tmp_path)
    assert loaded.config == model.config and torch.equal(loaded.grid.binary, model.grid.binary)
