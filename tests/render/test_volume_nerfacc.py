"""The CUDA volume path: backend choice (runs anywhere); nerfacc's real Python compositing and our
glue against the torch twin with nerfacc's CUDA ops replaced by CPU stand-ins (runs anywhere);
nerfacc's kernels against the twin on the same CUDA tensors, samples, forward and backward
(skips without CUDA and working nerfacc kernels)."""
from __future__ import annotations

import importlib.util
import math
import sys
import types
import warnings

import pytest
import torch

from fieldkit.encoders.frequency import FrequencyConfig
from fieldkit.errors import FieldkitError, FieldkitWarning
from fieldkit.fields import nerf as nerf_module
from fieldkit.fields.models import MlpModel, MlpModelConfig
from fieldkit.fields.nerf import RenderConfig
from fieldkit.fields.radiance import DecoderConfig
from fieldkit.render import backends
from fieldkit.render.backends import choose_volume_backend, nerfacc_status
from fieldkit.render.composite import render_rays
from fieldkit.render.occupancy import OccupancyGrid
from fieldkit.render.volume import march, midpoints, ray_aabb
from fieldkit.render.volume_nerfacc import march_nerfacc, render_rays_nerfacc

BOX = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])


@pytest.fixture
def fresh_backends(monkeypatch):
    """Forget the cached probe and the once-per-process warning for the test's duration."""
    monkeypatch.setattr(backends, "_warned", set())
    nerfacc_status.cache_clear()
    yield
    nerfacc_status.cache_clear()


# ------------------------------------------------------------------ backend choice (any machine)
def test_auto_on_cpu_is_torch_without_probing_or_warning(fresh_backends, monkeypatch):
    monkeypatch.setattr(backends, "nerfacc_status", lambda: pytest.fail("probed on the CPU"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_volume_backend("auto", "cpu") == "torch"
        assert choose_volume_backend("auto", torch.device("cpu")) == "torch"


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_torch_requested_is_torch(fresh_backends, monkeypatch, device):
    monkeypatch.setattr(backends, "nerfacc_status", lambda: pytest.fail("probed for 'torch'"))
    assert choose_volume_backend("torch", device) == "torch"
    assert choose_volume_backend(" TORCH ", device) == "torch"


def test_cuda_requested_without_cuda_raises_one_line(fresh_backends, monkeypatch):
    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    for requested in ("cuda", "nerfacc"):
        with pytest.raises(FieldkitError) as info:
            choose_volume_backend(requested, "cpu")
        msg = str(info.value)
        assert "\n" not in msg and "needs nerfacc" in msg and "'torch' volume backend" in msg
        if importlib.util.find_spec("nerfacc") is not None:
            assert "CUDA is not available" in msg


def test_cuda_requested_for_cpu_tensors_raises(fresh_backends, monkeypatch):
    monkeypatch.setattr(backends, "nerfacc_status", lambda: (True, "ok"))
    with pytest.raises(FieldkitError, match="CUDA device"):
        choose_volume_backend("cuda", "cpu")
    assert choose_volume_backend("cuda", "cuda:0") == "nerfacc"
    assert choose_volume_backend("nerfacc", "cuda") == "nerfacc"


def test_unknown_backend_raises(fresh_backends):
    with pytest.raises(FieldkitError, match="unknown volume backend 'vulkan'"):
        choose_volume_backend("vulkan", "cpu")


def test_auto_on_cuda_uses_nerfacc_when_the_probe_passes(fresh_backends, monkeypatch):
    monkeypatch.setattr(backends, "nerfacc_status", lambda: (True, "ok"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_volume_backend("auto", "cuda") == "nerfacc"


def test_failing_probe_on_cuda_warns_once(fresh_backends, monkeypatch):
    """The real probe with CUDA 'available' and a smoke test that fails like a broken build."""
    monkeypatch.setattr(backends, "cuda_available", lambda: True)

    def broken_build():
        raise RuntimeError("Error building extension 'nerfacc_cuda'\nninja: build stopped")

    monkeypatch.setattr(backends, "_nerfacc_smoke_test", broken_build)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [choose_volume_backend("auto", "cuda") for _ in range(3)] == ["torch"] * 3
        assert choose_volume_backend("auto") == "torch"  # None: CUDA (patched as available)
    ours = [w for w in caught if issubclass(w.category, FieldkitWarning)]
    assert len(ours) == 1
    msg = str(ours[0].message)
    assert "\n" not in msg and "nerfacc_cuda" in msg and "pure-torch ray marcher" in msg
    assert nerfacc_status.cache_info().misses == 1  # probed once, then cached
    with pytest.raises(FieldkitError, match="ninja"):
        choose_volume_backend("cuda", "cuda")


@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
def test_a_probe_first_asked_by_a_render_without_gradients_still_passes(fresh_backends,
                                                                         monkeypatch, context):
    """The first ask is often a render's (a viewer frame, an export, a teacher), under no_grad
    or inference_mode; the smoke test backpropagates, and must not fail there and leave the
    process on the torch fallback for good (the probe is cached)."""
    pytest.importorskip("nerfacc")
    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "a stand-in GPU")

    def backpropagating_smoke_test():   # what the real one does, on CPU tensors
        sigmas = torch.full((4,), 2.0).requires_grad_()
        (1 - torch.exp(-sigmas)).sum().backward()
        if sigmas.grad is None:
            raise RuntimeError("no gradient")

    monkeypatch.setattr(backends, "_nerfacc_smoke_test", backpropagating_smoke_test)
    with getattr(torch, context)():
        ok, reason = nerfacc_status()
        assert ok, reason
        assert choose_volume_backend("auto", "cuda") == "nerfacc"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_probe_without_cuda_fails_cleanly(fresh_backends):
    ok, reason = nerfacc_status()
    assert ok is False and reason and "\n" not in reason
    assert nerfacc_status() == (ok, reason)  # cached


def test_probe_without_nerfacc_fails_cleanly(fresh_backends, monkeypatch):
    monkeypatch.setitem(sys.modules, "nerfacc", None)  # "import nerfacc" raises ImportError
    ok, reason = nerfacc_status()
    assert not ok and "nerfacc cannot be imported" in reason and "\n" not in reason
    with pytest.raises(FieldkitError, match="needs nerfacc"):
        render_rays_nerfacc(lambda *a: None, march(torch.zeros(1, 3), torch.ones(1, 3), None,
                                                   step_size=0.1, aabb=BOX), 1)


# ------------------------------------------------------------------ scenes shared by all tests
def random_rays(n: int, seed: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Rays from a sphere of radius 3 towards the box (some miss), rays starting inside, and
    rays starting just inside a face going out (box span below one step)."""
    g = torch.Generator().manual_seed(seed)
    o = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * 3.0
    d = -o + 0.7 * torch.randn(n, 3, generator=g)
    inside = torch.rand(n // 4, 3, generator=g) * 1.8 - 0.9
    d_in = torch.randn(n // 4, 3, generator=g)
    face = torch.rand(8, 3, generator=g) * 1.6 - 0.8
    face[:, 0] = 1.0 - torch.rand(8, generator=g) * 0.01  # within 0.01 of the +x face
    d_face = torch.randn(8, 3, generator=g)
    d_face[:, 0] = d_face[:, 0].abs() + 0.5  # leaving through it
    o = torch.cat([o, inside, face])
    d = torch.nn.functional.normalize(torch.cat([d, d_in, d_face]), dim=-1)
    return o.to(device), d.to(device)


def random_grid(seed: int, box=BOX, resolution: int = 8, device="cpu") -> OccupancyGrid:
    """An occupancy grid with a random, anisotropic pattern (a transposed layout would show)."""
    g = torch.Generator().manual_seed(seed)
    grid = OccupancyGrid(box, resolution=resolution)
    with torch.no_grad():
        occ = torch.rand(resolution, resolution, resolution, generator=g) < 0.45
        occ[:, :2] &= torch.rand(resolution, 2, resolution, generator=g) < 0.3  # sparse low y
        grid.binary.copy_(occ)
    return grid.to(device)


def field_fns(origins, dirs):
    """An analytic field with (rgb [S, 3], sigma [S]) and sigma [S] callbacks."""
    def sigma_at(t0, t1, ri):
        p = midpoints(origins, dirs, t0, t1, ri)
        return 6.0 * torch.relu(torch.sin(3 * p[:, 0]) + torch.cos(2 * p[:, 1]) * p[:, 2])

    def rgb_sigma(t0, t1, ri):
        p = midpoints(origins, dirs, t0, t1, ri)
        return torch.sigmoid(torch.stack([p[:, 0], p[:, 1] * 2, p.sum(-1)], -1)), sigma_at(t0, t1,
                                                                                           ri)
    return rgb_sigma, sigma_at


def leaf_field(samples, seed, device="cpu"):
    """Leaves rgb [S, 3] and sigma [S] and an rgb_sigma_fn returning them (for gradients)."""
    g = torch.Generator().manual_seed(seed)
    n = len(samples)
    rgb = torch.rand(n, 3, generator=g).to(device).requires_grad_()
    sigma = (torch.rand(n, generator=g) * 30.0).to(device).requires_grad_()

    def fn(t0, t1, ri):
        assert t0.shape == (n,) and ri.dtype == torch.int64
        return rgb, sigma
    return rgb, sigma, fn


def upstream(n_rays: int, seed: int, device="cpu") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(n_rays, c, generator=g).to(device) for k, c in
            (("rgb", 3), ("alpha", 1), ("depth", 1))}


def loss_of(out, up, solid) -> torch.Tensor:
    """A random linear function of the outputs; depth (sum(w t) / alpha) only on the rays of the
    fixed mask ``solid`` [R, 1], where alpha is not tiny (the same mask for both renderers)."""
    return ((out["rgb"] * up["rgb"]).sum() + (out["alpha"] * up["alpha"]).sum()
            + (out["depth"] * up["depth"] * solid).sum())


def rel_err(a, b) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


# --------------------------------------------- nerfacc's Python code with CPU stand-ins for _C
def _fake_scan(exclusive: bool):
    """nerfacc's ``_C.inclusive_sum`` / ``_C.exclusive_sum`` on the CPU with the kernels' checks
    (float32, contiguous, int64 chunk starts/counts). Elements outside every chunk come back NaN
    (the kernel leaves them uninitialised), so a wrong packed_info shows."""
    def scan(chunk_starts, chunk_cnts, inputs, normalize, backward):
        assert inputs.dtype == torch.float32 and inputs.dim() == 1 and inputs.is_contiguous()
        for t in (chunk_starts, chunk_cnts):
            assert t.dtype == torch.int64 and t.dim() == 1 and t.is_contiguous()
        assert chunk_starts.shape == chunk_cnts.shape and not normalize
        out = torch.full_like(inputs, math.nan)
        owner = torch.repeat_interleave(torch.arange(len(chunk_cnts)), chunk_cnts)
        first = (torch.cumsum(chunk_cnts, 0) - chunk_cnts)[owner]
        offset = torch.arange(len(owner)) - first
        if backward:  # the gradient of a scan is the scan run from each chunk's end
            offset = chunk_cnts[owner] - 1 - offset
        pos = chunk_starts[owner] + offset
        vals = inputs[pos].double()
        incl = torch.cumsum(vals, 0)
        incl = incl - (incl[first] - vals[first])
        out[pos] = (incl - vals if exclusive else incl).float()
        return out
    return scan


def fake_traverse_grids(rays_o, rays_d, binaries, aabbs, near_planes=None, far_planes=None,
                        step_size=1e-3, cone_angle=0.0, **unused):
    """A CPU stand-in for ``nerfacc.traverse_grids`` (one grid, uniform steps) that follows the
    kernel's rules, which differ from ``volume.march``: the lattice starts at the near plane and
    advances by float32 additions; a sample is emitted when its midpoint lies in
    [max(entry, near), min(exit, far)) and in an occupied cell; its interval is never clipped
    (the last one may end past the exit, and a last piece shorter than half a step is lost).
    Returns (None, samples with vals = midpoints, ray_indices, packed_info, None)."""
    assert not unused and cone_angle == 0.0 and step_size > 0
    for t in (rays_o, rays_d, aabbs, near_planes, far_planes):
        assert t.dtype == torch.float32 and t.is_contiguous()
    n = rays_o.shape[0]
    assert rays_o.shape == rays_d.shape == (n, 3) and near_planes.shape == far_planes.shape == (n,)
    assert binaries.dtype == torch.bool and binaries.dim() == 4 and binaries.shape[0] == 1
    assert aabbs.shape == (1, 6) and binaries.is_contiguous()
    lo, hi = aabbs[0, :3], aabbs[0, 3:]
    inv = 1.0 / rays_d  # the kernel's slab test multiplies by 1 / dir
    ta, tb = (lo - rays_o) * inv, (hi - rays_o) * inv
    entry = torch.minimum(ta, tb).nan_to_num(nan=-math.inf).amax(-1)
    exit_ = torch.maximum(ta, tb).nan_to_num(nan=math.inf).amin(-1)
    hit = (exit_ > entry) & (exit_ > 0)
    tmin, tmax = torch.maximum(entry, near_planes), torch.minimum(exit_, far_planes)
    live = hit & (tmin < tmax)
    res = torch.tensor(binaries.shape[1:])
    dt = torch.tensor(step_size, dtype=torch.float32)
    t = near_planes.clone()
    rays, mids = [], []
    n_iter = int(((tmax - near_planes)[live] / step_size).max().ceil()) + 2 if live.any() else 0
    for _ in range(n_iter):
        t_next = t + dt
        mid = (t_next + t) * 0.5
        p = rays_o + rays_d * mid[:, None]
        ijk = torch.minimum(((p - lo) / (hi - lo) * res).long().clamp_min(0), res - 1)
        occ = binaries[0, ijk[:, 0], ijk[:, 1], ijk[:, 2]]
        take = torch.nonzero(live & (t + dt * 0.5 >= tmin) & (t + dt * 0.5 < tmax) & occ)[:, 0]
        rays.append(take)
        mids.append(mid[take])
        t = t_next
    ray = torch.cat(rays) if rays else torch.zeros(0, dtype=torch.long)
    mid = torch.cat(mids) if mids else torch.zeros(0)
    order = torch.sort(ray, stable=True).indices  # ray by ray, each in t order
    counts = torch.bincount(ray, minlength=n)
    packed = torch.stack([torch.cumsum(counts, 0) - counts, counts], -1)
    return None, types.SimpleNamespace(vals=mid[order], ray_indices=ray[order],
                                       packed_info=packed), None


@pytest.fixture
def fake_nerfacc(monkeypatch):
    """nerfacc with its CUDA ops replaced by the stand-ins above; everything else is real."""
    nerfacc = pytest.importorskip("nerfacc")
    import nerfacc.scan

    fake_c = types.SimpleNamespace(exclusive_sum=_fake_scan(True), inclusive_sum=_fake_scan(False))
    monkeypatch.setattr(nerfacc.scan, "_C", fake_c)
    monkeypatch.setattr(nerfacc, "traverse_grids", fake_traverse_grids)
    return nerfacc


def test_fake_scan_matches_torch(fake_nerfacc):
    """The stand-in is right (forward and backward), else the tests below would prove little."""
    x = torch.rand(9, dtype=torch.float32, requires_grad=True)
    packed = torch.tensor([[0, 2], [2, 0], [2, 3], [5, 4]])
    got = fake_nerfacc.exclusive_sum(x, packed)
    want = torch.cat([torch.cumsum(torch.cat([x.new_zeros(1), x[s:s + c][:-1]]), 0)
                      for s, c in packed.tolist() if c])
    torch.testing.assert_close(got, want)
    up = torch.randn(9)
    (g1,) = torch.autograd.grad((got * up).sum(), x)
    (g2,) = torch.autograd.grad((want * up).sum(), x)
    torch.testing.assert_close(g1, g2)
    torch.testing.assert_close(fake_nerfacc.inclusive_sum(x, packed),
                               torch.cat([torch.cumsum(x[s:s + c], 0) for s, c in packed.tolist()]))


@pytest.mark.parametrize("with_background", [False, True])
def test_render_rays_nerfacc_matches_twin_through_fake_scan(fake_nerfacc, with_background):
    o, d = random_rays(120, seed=1)
    samples = march(o, d, random_grid(2), step_size=2 * math.sqrt(3) / 64, aabb=BOX)
    assert len(samples) > 1000 and (samples.packed_info[:, 1] == 0).any()  # some empty rays
    bg = torch.tensor([0.2, 0.5, 0.9]) if with_background else None
    up = upstream(len(o), seed=3)
    with torch.no_grad():
        solid = render_rays(leaf_field(samples, seed=4)[2], samples, len(o))["alpha"] > 0.1
    outs, grads = [], []
    for fn in (render_rays, render_rays_nerfacc):
        rgb, sigma, field = leaf_field(samples, seed=4)
        out = fn(field, samples, len(o), background=bg)
        loss_of(out, up, solid).backward()
        outs.append(out)
        grads.append((rgb.grad, sigma.grad))
    twin, ours = outs
    assert ours["num_samples"] == twin["num_samples"] == len(samples)
    for k in ("rgb", "depth", "alpha", "weights"):
        assert ours[k].shape == twin[k].shape and ours[k].dtype == twin[k].dtype, k
    # float32 transmittance from a float32 scan against the twin's float64 cumsum: ~1e-7 x the
    # optical depth (up to ~50 here) in the exponent -> 1e-5 on values <= 1.
    for k in ("rgb", "alpha", "weights"):
        torch.testing.assert_close(ours[k], twin[k], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours["depth"], twin["depth"], atol=1e-5, rtol=1e-5)
    # Gradients: the same rounding through the backward scan; depth terms divide by alpha > 0.1.
    for a, b in zip(grads[1], grads[0]):
        assert a is not None and torch.isfinite(a).all()
        assert rel_err(a, b) < 1e-5
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_render_rays_nerfacc_without_samples(fake_nerfacc):
    o, d = torch.tensor([[0.0, 3.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])  # points away
    samples = march(o, d, None, step_size=0.1, aabb=BOX)
    out = render_rays_nerfacc(lambda *a: pytest.fail("called without samples"), samples, 1,
                              torch.tensor([0.1, 0.2, 0.3]))
    assert out["num_samples"] == 0 and out["alpha"].tolist() == [[0.0]]
    torch.testing.assert_close(out["rgb"], torch.tensor([[0.1, 0.2, 0.3]]))
    with pytest.raises(ValueError, match="packed_info"):
        render_rays_nerfacc(lambda *a: None, samples, 2)


MARCH_CASES = {  # name: (grid box or None for no grid, near, far, stratified, prune)
    "grid": (BOX, 0.0, 1e10, False, False),
    "grid_inner_box": (BOX * 0.8, 0.0, 1e10, False, False),
    "no_grid": (None, 0.0, 1e10, False, False),
    "near_far": (BOX, 2.5, 3.4, False, False),
    "stratified": (BOX, 0.0, 1e10, True, False),
    "pruned": (BOX, 0.0, 1e10, False, True),
}


@pytest.mark.parametrize("case", list(MARCH_CASES))
def test_march_nerfacc_matches_twin_through_fake_traverse(fake_nerfacc, case):
    box, near, far, stratified, prune = MARCH_CASES[case]
    o, d = random_rays(150, seed=5)
    grid = None if box is None else random_grid(6, box)
    step = 2 * math.sqrt(3) / 80
    _, sigma_fn = field_fns(o, d)
    kw = dict(near=near, far=far, step_size=step, aabb=BOX, sigma_fn=sigma_fn if prune else None,
              early_stop_eps=1e-3, alpha_thre=1e-2, stratified=stratified)
    torch.manual_seed(7)
    twin = march(o, d, grid, **kw)
    torch.manual_seed(7)  # the same jitter when stratified
    ours = march_nerfacc(o, d, grid, **kw)
    assert len(twin) > 500
    # Same samples, bit for bit: t's are rebuilt from the step index with march's formula.
    assert torch.equal(ours.ray_indices, twin.ray_indices)
    assert torch.equal(ours.t_starts, twin.t_starts) and torch.equal(ours.t_ends, twin.t_ends)
    assert torch.equal(ours.packed_info, twin.packed_info)


def test_fake_traverse_differs_from_march_where_nerfacc_does(fake_nerfacc):
    """Without the glue, nerfacc's samples are not march's (so the test above can fail): short
    last pieces are lost, last intervals end past the box, t's drift from t0 + k * step."""
    o, d = random_rays(150, seed=5)
    step = 2 * math.sqrt(3) / 80
    twin = march(o, d, None, step_size=step, aabb=BOX)
    t_near, t_far = ray_aabb(o, d, BOX)
    live = t_near < t_far
    raw = fake_traverse_grids(o, d, torch.ones(1, 1, 1, 1, dtype=torch.bool), BOX[None],
                              near_planes=torch.where(live, t_near, 0.0),
                              far_planes=torch.where(live, t_far, 0.0), step_size=step)[1]
    lost = twin.packed_info[:, 1] - raw.packed_info[:, 1]
    assert (lost >= 0).all() and (lost <= 1).all() and 10 < int(lost.sum()) < len(o)
    ends = raw.vals + step / 2
    assert (ends > t_far[raw.ray_indices] + 1e-6).sum() > 10


def test_march_nerfacc_short_spans_get_march_s_single_sample(fake_nerfacc):
    """Rays whose box span is below half a step: nerfacc emits nothing, march one clipped
    sample; march_nerfacc must give march's."""
    o = torch.tensor([[0.999, 0.0, 0.0], [0.0, -0.9995, 0.3], [0.2, 0.3, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
    ours = march_nerfacc(o, d, None, step_size=0.05, aabb=BOX)
    twin = march(o, d, None, step_size=0.05, aabb=BOX)
    assert ours.packed_info[:, 1].tolist() == twin.packed_info[:, 1].tolist() == [1, 1, 20]
    assert torch.equal(ours.t_ends, twin.t_ends) and torch.equal(ours.t_starts, twin.t_starts)


# ------------------------------------------------------------------ VolumeModel (CPU)
def small_model(backend: str, device="cpu") -> MlpModel:
    torch.manual_seed(0)
    cfg = MlpModelConfig(
        encoder=FrequencyConfig(num_frequencies=4),
        decoder=DecoderConfig(hidden_dim=32, density_layers=2, geo_feat_dim=15,
                              color_hidden_dim=16, color_layers=1, bias=True),
        render=RenderConfig(grid_resolution=16, render_steps=64, backend=backend))
    model = MlpModel(cfg)
    with torch.no_grad():
        model.field.density_net[-1].bias[0] += 4.0  # dense enough for early stop to matter
        model.grid.binary.copy_(torch.rand(16, 16, 16, generator=torch.Generator().manual_seed(1))
                                < 0.6)
    return model.to(device)


def test_backend_field_defaults_to_auto_and_old_configs_load():
    from fieldkit.fields.registry import config_from_dict

    assert RenderConfig().backend == "auto"
    old = {"bound": 1.0, "grid_resolution": 32}  # a config.json written before the field
    assert config_from_dict(RenderConfig, old).backend == "auto"


def test_volume_model_torch_and_auto_render_identically_on_cpu(monkeypatch, fresh_backends):
    monkeypatch.setattr(backends, "nerfacc_status", lambda: pytest.fail("probed on the CPU"))
    o, d = random_rays(64, seed=8)
    bg = torch.tensor([0.3, 0.6, 0.9])
    results = {}
    for backend in ("torch", "auto"):
        model = small_model(backend)
        out = model.render_rays(o, d, bg)
        out["rgb"].sum().backward()
        with torch.no_grad():
            infer = model.render_rays(o, d, bg)
        results[backend] = (out, infer, [p.grad for p in model.parameters()])
    (out_t, inf_t, g_t), (out_a, inf_a, g_a) = results["torch"], results["auto"]
    assert out_t["num_samples"] > 0 and inf_t["alpha"].max() > 0.5
    for k in ("rgb", "depth", "alpha"):
        assert torch.equal(out_t[k], out_a[k]) and torch.equal(inf_t[k], inf_a[k]), k
    assert all(torch.equal(a, b) for a, b in zip(g_t, g_a))


def test_volume_model_cuda_backend_on_cpu_raises(fresh_backends):
    model = small_model("cuda")
    with pytest.raises(FieldkitError, match="volume backend 'cuda'"):
        model.render_rays(*random_rays(4, seed=0), torch.ones(3))


def test_volume_model_nerfacc_branch_matches_torch_through_fakes(fake_nerfacc, monkeypatch):
    """The nerfacc branch of VolumeModel.render_rays on the CPU (nerfacc's CUDA ops faked)."""
    o, d = random_rays(64, seed=9)
    bg = torch.tensor([0.3, 0.6, 0.9])
    with torch.no_grad():
        solid = small_model("torch").render_rays(o, d, bg)["alpha"] > 0.1
    runs = {}
    for name in ("torch", "nerfacc"):
        monkeypatch.setattr(nerf_module, "choose_volume_backend", lambda *a, _n=name: _n)
        model = small_model("auto")
        out = model.render_rays(o, d, bg)
        loss_of(out, upstream(len(o), seed=10), solid).backward()
        with torch.no_grad():
            infer = model.render_rays(o, d, bg)
        runs[name] = (out, infer, {n: p.grad for n, p in model.named_parameters()})
    (out_t, inf_t, g_t), (out_n, inf_n, g_n) = runs["torch"], runs["nerfacc"]
    assert out_n["num_samples"] == out_t["num_samples"] > 0
    # Training: the same samples and pre-pass; float32 scans against float64 cumsums.
    for k in ("rgb", "depth", "alpha"):
        torch.testing.assert_close(out_n[k], out_t[k], atol=1e-5, rtol=1e-5)
    for n in g_t:
        assert rel_err(g_n[n], g_t[n]) < 1e-4, n
    # Inference: density pre-pass + one field pass against the twin's front-to-back rounds; the
    # two stop a ray within about early_stop_eps (1e-4) of each other.
    assert inf_t["alpha"].max() > 0.5
    for k in ("rgb", "alpha"):
        torch.testing.assert_close(inf_n[k], inf_t[k], atol=1e-3, rtol=0)
    solid = inf_t["alpha"] > 0.1
    torch.testing.assert_close(inf_n["depth"][solid], inf_t["depth"][solid], atol=1e-2, rtol=1e-3)


# ----------------------------------------------------- nerfacc against the twin (CUDA only)
@pytest.fixture(scope="module")
def nerfacc_cuda():
    ok, reason = nerfacc_status()
    if not ok:
        pytest.skip(f"nerfacc CUDA kernels unavailable: {reason}")
    return torch.device("cuda")


def sample_keys(s) -> torch.Tensor:
    """[S] int64 key of each (ray, t_start) pair, exact (float bits)."""
    bits = s.t_starts.float().contiguous().view(torch.int32).long() & 0xFFFFFFFF
    return s.ray_indices * (1 << 32) + bits


@pytest.mark.parametrize("case", list(MARCH_CASES))
@pytest.mark.parametrize("resolution", [8, 32])
def test_march_nerfacc_matches_twin_on_cuda(nerfacc_cuda, case, resolution):
    box, near, far, stratified, prune = MARCH_CASES[case]
    dev = nerfacc_cuda
    o, d = random_rays(2000, seed=11, device=dev)
    grid = None if box is None else random_grid(12, box, resolution, device=dev)
    _, sigma_fn = field_fns(o, d)
    kw = dict(near=near, far=far, step_size=2 * math.sqrt(3) / 256, aabb=BOX.to(dev),
              sigma_fn=sigma_fn if prune else None, early_stop_eps=1e-3, alpha_thre=1e-2,
              stratified=stratified)
    torch.manual_seed(13)
    twin = march(o, d, grid, **kw)
    torch.manual_seed(13)  # march_nerfacc draws the jitter with the same call
    ours = march_nerfacc(o, d, grid, **kw)
    assert len(twin) > 10000
    assert torch.equal(ours.packed_info[:, 0] + ours.packed_info[:, 1],
                       torch.cumsum(ours.packed_info[:, 1], 0))
    assert (ours.ray_indices[1:] >= ours.ray_indices[:-1]).all()
    # The same samples except where float32 rounding decides: a midpoint within ~1e-6 of a
    # cell face (nerfacc's DDA with t drifting by ~sqrt(k) ulp: about 3 faces x 2e-6 / (2/32)
    # x 1/2 ~ 5e-5 of the samples at resolution 32; a CPU emulation of the kernel's float32
    # walk gives 1e-5 to 4e-5), a ray grazing the box, or (pruned) a
    # sample on the early-stop / alpha threshold. We allow 1e-3 of the samples: a transposed
    # grid (~50%), a shifted lattice (~100%) or lost last intervals (~1%) all go far beyond.
    k_t, k_o = sample_keys(twin), sample_keys(ours)
    only_twin = (~torch.isin(k_t, k_o)).sum().item()
    only_ours = (~torch.isin(k_o, k_t)).sum().item()
    assert only_twin + only_ours <= 1e-3 * len(twin), (only_twin, only_ours, len(twin))
    if not prune:  # every sample is re-tested at march's midpoint: ours is a subset of march's
        assert only_ours == 0
    # Samples both have: t's bit for bit (rebuilt from the step index with march's formula).
    common_t = torch.isin(k_t, k_o)
    common_o = torch.isin(k_o, k_t)
    assert torch.equal(ours.t_ends[common_o], twin.t_ends[common_t])


@pytest.mark.parametrize("with_background", [False, True])
def test_render_rays_nerfacc_matches_twin_on_cuda(nerfacc_cuda, with_background):
    dev = nerfacc_cuda
    o, d = random_rays(3000, seed=14, device=dev)
    samples = march(o, d, random_grid(15, device=dev), step_size=2 * math.sqrt(3) / 256,
                    aabb=BOX.to(dev))
    bg = torch.tensor([0.2, 0.5, 0.9], device=dev) if with_background else None
    up = upstream(len(o), seed=16, device=dev)
    with torch.no_grad():
        solid = render_rays(leaf_field(samples, 17, dev)[2], samples, len(o))["alpha"] > 0.1
    outs, grads = [], []
    for fn in (render_rays, render_rays_nerfacc):  # the same samples and field values
        rgb, sigma, field = leaf_field(samples, seed=17, device=dev)
        out = fn(field, samples, len(o), background=bg)
        loss_of(out, up, solid).backward()
        outs.append(out)
        grads.append((rgb.grad, sigma.grad))
    twin, ours = outs
    # nerfacc's float32 per-ray scan against the twin's float64 global cumsum: the exponent of
    # the transmittance differs by ~1e-7 x the optical depth (tens here), so 1e-5 on values
    # <= 1; index_add sums per ray in another (atomic) order: ~1e-7.
    for k in ("rgb", "alpha", "weights"):
        torch.testing.assert_close(ours[k], twin[k], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours["depth"], twin["depth"], atol=1e-4, rtol=1e-5)
    # Gradients: the backward scan in float32 (reverse order) against autograd of the float64
    # cumsum: the same relative rounding, larger terms (sigma gradients sum over the samples
    # behind), so relative L2 error 1e-5 and elementwise 1e-4.
    for a, b in zip(grads[1], grads[0]):
        assert torch.isfinite(a).all()
        assert rel_err(a, b) < 1e-5
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_volume_model_nerfacc_matches_torch_on_cuda(nerfacc_cuda, fresh_backends):
    dev = nerfacc_cuda
    o, d = random_rays(4096, seed=18, device=dev)
    bg = torch.tensor([0.3, 0.6, 0.9], device=dev)
    with torch.no_grad():
        solid = small_model("torch", dev).render_rays(o, d, bg)["alpha"] > 0.1
    runs = {}
    for backend in ("torch", "cuda"):
        model = small_model(backend, dev)
        model.config.decoder.precision = "fp32"  # the same field arithmetic for both
        out = model.render_rays(o, d, bg)
        loss_of(out, upstream(len(o), seed=19, device=dev), solid).backward()
        with torch.no_grad():
            infer = model.render_rays(o, d, bg)
        runs[backend] = (out, infer, {n: p.grad for n, p in model.named_parameters()})
    (out_t, inf_t, g_t), (out_n, inf_n, g_n) = runs["torch"], runs["cuda"]
    n = out_t["num_samples"]
    assert n > 10000 and abs(out_n["num_samples"] - n) <= 1e-3 * n  # see the march test
    # A differing sample moves its ray's colour by up to its weight (~0.25 here), so compare
    # most rays tightly (float32 scans: 1e-5) and the rest not at all; in L2 all rays.
    for k in ("rgb", "alpha"):
        assert rel_err(out_n[k], out_t[k]) < 1e-2, k
        assert ((out_n[k] - out_t[k]).abs() > 1e-5).any(-1).float().mean() < 0.01, k
    # Parameter gradients sum over ~1e5 samples: a few differing ones move them by ~1e-4.
    for name in g_t:
        assert rel_err(g_n[name], g_t[name]) < 1e-2, name
    # Inference: density pre-pass + one field pass against front-to-back rounds: rays stop
    # within about early_stop_eps (1e-4) of each other.
    for k in ("rgb", "alpha"):
        assert ((inf_n[k] - inf_t[k]).abs() > 1e-3).any(-1).float().mean() < 0.01, k
        assert (inf_n[k] - inf_t[k]).abs().mean() < 1e-3, k
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_volume_backend("auto", dev) == "nerfacc"
