"""3DGS .ply reading/writing and similarity transforms of splat params."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fieldkit.data.normalize import Normalisation
from fieldkit.encoders.sh import sh_encode
from fieldkit.errors import FieldkitError
from fieldkit.splats.ply import read_splat_ply, sh_degree_of, write_splat_ply
from fieldkit.splats.transform import (
    quat_to_rotmat,
    rotmat_to_quat,
    splats_to_box,
    splats_to_world,
    transform_splats,
)

KEYS = ("means", "scales", "quats", "opacities", "sh0", "shN")


def random_params(n: int, degree: int, seed: int = 0, dtype=torch.float32) -> dict:
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2
    return {
        "means": torch.randn(n, 3, generator=g, dtype=dtype) * 3,
        "scales": torch.randn(n, 3, generator=g, dtype=dtype) - 3,
        "quats": torch.randn(n, 4, generator=g, dtype=dtype) * 2,
        "opacities": torch.randn(n, generator=g, dtype=dtype),
        "sh0": torch.randn(n, 1, 3, generator=g, dtype=dtype),
        "shN": torch.randn(n, k - 1, 3, generator=g, dtype=dtype) * 0.3,
    }


def random_rotation(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


# ---------------------------------------------------------------------------------------------
# An independent writer built from the published 3DGS field list.

def inria_fields(degree: int) -> list[str]:
    rest = 3 * ((degree + 1) ** 2 - 1)
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + ["f_rest_%d" % i for i in range(rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def inria_bytes(params: dict, degree: int) -> bytes:
    """What the INRIA ``save_ply`` produces: columns concatenated, f_rest transposed to
    [N, 3, K-1] then flattened, written by plyfile as float32 little endian."""
    n = params["means"].shape[0]
    columns = np.concatenate([
        params["means"].numpy(), np.zeros((n, 3), np.float32),
        params["sh0"].transpose(1, 2).flatten(start_dim=1).numpy(),
        params["shN"].transpose(1, 2).flatten(start_dim=1).numpy(),
        params["opacities"][:, None].numpy(), params["scales"].numpy(), params["quats"].numpy(),
    ], axis=1)
    fields = inria_fields(degree)
    elements = np.empty(n, dtype=[(f, "f4") for f in fields])
    elements[:] = list(map(tuple, columns))
    header = "ply\nformat binary_little_endian 1.0\nelement vertex %d\n" % n
    header += "".join("property float %s\n" % f for f in fields) + "end_header\n"
    return header.encode("ascii") + elements.tobytes()


def write_custom_ply(path: Path, columns: dict[str, np.ndarray], fmt: str = "binary_little_endian",
                     types: dict[str, str] | None = None) -> Path:
    """A ply with the given named columns, in the given order and types (default float)."""
    types = types or {}
    ply_to_np = {"float": "f4", "double": "f8", "uchar": "u1", "int": "i4"}
    endian = ">" if fmt == "binary_big_endian" else "<"
    n = len(next(iter(columns.values())))
    dtype = [(name, endian + ply_to_np[types.get(name, "float")]) for name in columns]
    data = np.empty(n, dtype=dtype)
    for name, col in columns.items():
        data[name] = col
    header = f"ply\nformat {fmt} 1.0\ncomment made by a test\nelement vertex {n}\n"
    header += "".join(f"property {types.get(name, 'float')} {name}\n" for name in columns)
    path.write_bytes((header + "end_header\n").encode("ascii") + data.tobytes())
    return path


def columns_of(params: dict) -> dict[str, np.ndarray]:
    degree = sh_degree_of(params)
    n = params["means"].shape[0]
    flat = torch.cat([params["means"], torch.zeros(n, 3), params["sh0"].flatten(1),
                      params["shN"].transpose(1, 2).flatten(1), params["opacities"][:, None],
                      params["scales"], params["quats"]], dim=1).numpy()
    return {name: flat[:, i] for i, name in enumerate(inria_fields(degree))}


def assert_same(a: dict, b: dict, exact: bool = True) -> None:
    for key in KEYS:
        assert a[key].shape == b[key].shape, key
        if exact:
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5, msg=key)


# ---------------------------------------------------------------------------------------------
# Writing and reading

@pytest.mark.parametrize("degree", [0, 3])
def test_bytes_match_the_inria_layout(tmp_path, degree):
    params = random_params(37, degree, seed=degree)
    path = write_splat_ply(tmp_path / "scene.ply", params)
    assert path == tmp_path / "scene.ply"
    assert path.read_bytes() == inria_bytes(params, degree)
    assert not [p for p in tmp_path.iterdir() if p.name != "scene.ply"]  # no temp file left


def test_f_rest_is_channel_major(tmp_path):
    params = random_params(4, 3)
    cols = read_raw(write_splat_ply(tmp_path / "s.ply", params))
    assert np.array_equal(cols["f_rest_17"], params["shN"][:, 2, 1].numpy())  # c=1, k=2: 1*15+2
    assert np.array_equal(cols["f_rest_44"], params["shN"][:, 14, 2].numpy())
    assert np.array_equal(cols["f_dc_2"], params["sh0"][:, 0, 2].numpy())
    assert not cols["nx"].any()


def read_raw(path: Path) -> dict[str, np.ndarray]:
    raw = path.read_bytes()
    head, body = raw.split(b"end_header\n", 1)
    names = [line.split()[-1].decode() for line in head.splitlines() if line.startswith(b"prop")]
    data = np.frombuffer(body, dtype=[(n, "<f4") for n in names])
    return {n: data[n] for n in names}


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_round_trip_is_exact(tmp_path, degree):
    params = random_params(50, degree, seed=10 + degree)
    back = read_splat_ply(write_splat_ply(tmp_path / "s.ply", params))
    assert_same(params, back)
    assert all(v.dtype == torch.float32 for v in back.values())
    assert sh_degree_of(back) == degree
    assert back["shN"].shape == (50, (degree + 1) ** 2 - 1, 3)


def test_read_shuffled_order_extra_properties_no_normals(tmp_path):
    params = random_params(20, 2, seed=3)
    cols = {k: v for k, v in columns_of(params).items() if k not in ("nx", "ny", "nz")}
    names = list(cols)
    rng = np.random.default_rng(0)
    rng.shuffle(names)
    cols = {k: cols[k] for k in names}
    cols = {"red": np.full(20, 200), **cols, "filter_3D": np.ones(20), "green": np.arange(20)}
    path = write_custom_ply(tmp_path / "s.ply", cols,
                            types={"red": "uchar", "green": "int", "filter_3D": "double"})
    assert_same(params, read_splat_ply(path))


@pytest.mark.parametrize("fmt", ["binary_little_endian", "binary_big_endian"])
def test_read_double_precision(tmp_path, fmt):
    params = random_params(15, 3, seed=4)
    cols = columns_of(params)
    path = write_custom_ply(tmp_path / "d.ply", cols, fmt=fmt, types=dict.fromkeys(cols, "double"))
    assert_same(params, read_splat_ply(path))  # float32 -> double -> float32 is exact


def expect_error(path: Path, *words: str) -> str:
    with pytest.raises(FieldkitError) as info:
        read_splat_ply(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message, message
    return message


def test_malformed_files_raise_one_line(tmp_path):
    params = random_params(10, 1, seed=5)
    good = write_splat_ply(tmp_path / "good.ply", params).read_bytes()

    (tmp_path / "ascii.ply").write_bytes(good.replace(b"binary_little_endian", b"ascii", 1))
    expect_error(tmp_path / "ascii.ply", "ascii")

    (tmp_path / "short.ply").write_bytes(good[:-7])
    expect_error(tmp_path / "short.ply", "truncated")

    (tmp_path / "nohead.ply").write_bytes(good[:200])
    expect_error(tmp_path / "nohead.ply", "end_header")

    cols = columns_of(params)
    del cols["scale_1"], cols["opacity"]
    expect_error(write_custom_ply(tmp_path / "missing.ply", cols), "scale_1", "opacity")

    cols = columns_of(params)
    cols["f_rest_9"] = cols["f_rest_0"]  # 10 f_rest values
    expect_error(write_custom_ply(tmp_path / "rest.ply", cols), "f_rest")

    cols = columns_of(params)
    cols["f_rest_12"] = cols.pop("f_rest_3")  # nine values, but not f_rest_0..8
    expect_error(write_custom_ply(tmp_path / "gap.ply", cols), "f_rest")

    (tmp_path / "notply.ply").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    expect_error(tmp_path / "notply.ply", "not a PLY")
    (tmp_path / "empty.ply").write_bytes(b"")
    expect_error(tmp_path / "empty.ply", "not a PLY")
    expect_error(tmp_path / "absent.ply")


def test_write_refuses_empty_and_nan(tmp_path):
    with pytest.raises(FieldkitError, match="no Gaussians"):
        write_splat_ply(tmp_path / "e.ply", random_params(0, 0))
    with pytest.raises(FieldkitError, match="lack"):
        write_splat_ply(tmp_path / "e.ply", {})
    params = random_params(5, 1)
    params["scales"][2, 1] = float("nan")
    with pytest.raises(FieldkitError, match="scales.*NaN") as info:
        write_splat_ply(tmp_path / "n.ply", params)
    assert "\n" not in str(info.value)
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# Transforms

def covariances(params: dict) -> torch.Tensor:
    r = quat_to_rotmat(params["quats"].double())
    s = params["scales"].double().exp()
    return r @ torch.diag_embed(s * s) @ r.transpose(-1, -2)


def colours(params: dict, dirs: torch.Tensor) -> torch.Tensor:
    """[N, 3] colour of each Gaussian seen along dirs [N, 3]."""
    sh = torch.cat([params["sh0"], params["shN"]], dim=1).double()      # [N, K, 3]
    basis = sh_encode(dirs, int(math.isqrt(sh.shape[1])))                 # [N, K]
    return 0.5 + (basis[..., None] * sh).sum(1)


def test_quaternion_matrix_round_trip():
    q = torch.randn(500, 4, dtype=torch.float64)
    r = quat_to_rotmat(q)
    eye = torch.eye(3, dtype=torch.float64).expand(500, 3, 3)
    assert torch.allclose(r @ r.transpose(1, 2), eye)
    assert torch.allclose(torch.det(r), torch.ones(500, dtype=torch.float64))
    q2 = rotmat_to_quat(r)
    qn = torch.nn.functional.normalize(q, dim=-1)
    assert torch.allclose(q2, qn * torch.sign(qn[:, :1]), atol=1e-12)
    # near-180-degree rotations, where w ~ 0, are the hard case
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    assert torch.allclose(quat_to_rotmat(rotmat_to_quat(flip)), flip, atol=1e-12)


def test_means_and_covariances_transform():
    params = random_params(64, 3, seed=6)
    rot, s, t = random_rotation(1), 2.5, torch.tensor([0.3, -1.0, 4.0], dtype=torch.float64)
    before = {k: v.clone() for k, v in params.items()}
    out = transform_splats(params, rot, s, t)
    assert_same(params, before)  # input untouched
    expected = s * params["means"].double() @ rot.T + t
    torch.testing.assert_close(out["means"].double(), expected, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(covariances(out), s * s * rot @ covariances(params) @ rot.T,
                               rtol=1e-5, atol=1e-9)
    assert torch.equal(out["opacities"], params["opacities"])
    assert torch.equal(out["sh0"], params["sh0"])
    assert all(out[k].dtype == torch.float32 for k in KEYS)


@pytest.mark.parametrize("seed", [2, 3])
def test_sh_rotation_keeps_view_dependent_colour(seed):
    params = random_params(200, 3, seed=seed)
    params["shN"] = params["shN"] / 0.3  # full-strength coefficients
    rot = random_rotation(seed)
    out = transform_splats(params, rot, 0.7, torch.zeros(3))
    dirs = torch.nn.functional.normalize(torch.randn(200, 3, dtype=torch.float64), dim=-1)
    c_before = colours(params, dirs)
    c_after = colours(out, dirs @ rot.T)  # R d
    torch.testing.assert_close(c_after, c_before, rtol=0, atol=1e-5)
    # it is not trivially true: the colour along the unrotated direction differs
    assert (colours(out, dirs) - c_before).abs().max() > 0.1


@pytest.mark.parametrize("degree", [0, 1, 2])
def test_sh_rotation_lower_degrees(degree):
    params = random_params(50, degree, seed=degree, dtype=torch.float64)
    rot = random_rotation(7)
    out = transform_splats(params, rot, 1.0, torch.zeros(3))
    dirs = torch.nn.functional.normalize(torch.randn(50, 3, dtype=torch.float64), dim=-1)
    torch.testing.assert_close(colours(out, dirs @ rot.T), colours(params, dirs),
                               rtol=0, atol=1e-10)


def test_to_world_and_back_is_identity():
    norm = Normalisation(0.37, random_rotation(11).numpy(), np.array([1.5, -2.0, 0.25]), 4.0)
    params = random_params(80, 3, seed=8)
    world = splats_to_world(params, norm)
    torch.testing.assert_close(world["means"], norm.to_world(params["means"]),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(world["scales"], params["scales"] - math.log(0.37))
    assert_same(splats_to_box(world, norm), params, exact=False)
    box = splats_to_box(params, norm)
    torch.testing.assert_close(box["means"], norm.to_box(params["means"]), rtol=1e-5, atol=1e-5)
    assert_same(splats_to_world(box, norm), params, exact=False)


def test_identity_transform_changes_nothing():
    params = random_params(30, 3, seed=9)
    out = transform_splats(params, torch.eye(3), 1.0, torch.zeros(3))
    for key in ("means", "scales", "quats", "opacities", "sh0"):
        assert torch.equal(out[key], params[key]), key
    torch.testing.assert_close(out["shN"], params["shN"], rtol=0, atol=1e-7)
    assert out["means"] is not params["means"]


def test_transform_refuses_reflections_and_bad_scales():
    params = random_params(3, 1)
    with pytest.raises(FieldkitError, match="proper rotation"):
        transform_splats(params, torch.diag(torch.tensor([1.0, 1.0, -1.0])), 1.0, torch.zeros(3))
    with pytest.raises(FieldkitError, match="scale"):
        transform_splats(params, torch.eye(3), 0.0, torch.zeros(3))
