"""Image loading, --downscale and its cache."""
import os
import time

import numpy as np
import torch
from PIL import Image

from fieldkit.data.images import cache_dir_for, downscaled_size, load_images
from fieldkit.data.scene import composite, load_scene
from tests.data import synthetic


def test_downscale_is_a_box_filter_and_scales_intrinsics(tmp_path):
    root = synthetic.blender_copy(tmp_path / "s")
    full = load_scene(root)
    half = load_scene(root, downscale=2)
    assert half.image(0).shape == (48, 48, 4)
    # Averaging is alpha-weighted (premultiplied), so compositing commutes with downscaling:
    # the small image over white equals the box average of the full image over white.
    white = torch.ones(3)
    big = composite(full.image(0), white).double()
    expected = (big[0::2, 0::2] + big[1::2, 0::2] + big[0::2, 1::2] + big[1::2, 1::2]) / 4
    small = composite(half.image(0), white).double()
    assert (small - expected).abs().max() <= 2.5 / 255  # uint8 rounding of rgb and alpha
    alpha = full.image(0)[..., 3].double()
    mean_alpha = (alpha[0::2, 0::2] + alpha[1::2, 0::2] + alpha[0::2, 1::2] + alpha[1::2, 1::2]) / 4
    assert (half.image(0)[..., 3].double() - mean_alpha).abs().max() <= 1.0
    assert torch.allclose(half.cameras.K[:, :2, :], full.cameras.K[:, :2, :] / 2)


def test_cache_lives_next_to_a_writable_scene_and_is_reused(tmp_path):
    root = synthetic.blender_copy(tmp_path / "s")
    load_scene(root, downscale=3)
    cached = root / ".fieldkit" / "downscale_3" / "train" / "r_0.png"
    assert cached.is_file()
    assert Image.open(cached).size == downscaled_size(96, 96, 3) == (32, 32)
    # A doctored cache file is returned as-is while it is newer than its source...
    marker = np.zeros((32, 32, 4), np.uint8)
    marker[0, 0] = [1, 2, 3, 255]
    Image.fromarray(marker).save(cached)
    assert load_scene(root, downscale=3).image(0)[0, 0].tolist() == [1, 2, 3, 255]
    # ...and rebuilt once the source changes.
    future = time.time() + 10
    os.utime(root / "train" / "r_0.png", (future, future))
    assert load_scene(root, downscale=3).image(0)[0, 0].tolist() != [1, 2, 3, 255]


def test_read_only_scene_caches_elsewhere(tmp_path, monkeypatch):
    root = synthetic.blender_copy(tmp_path / "ro")
    monkeypatch.setenv("FIELDKIT_CACHE", str(tmp_path / "cache"))
    for d in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        d.chmod(0o555)
    try:
        if os.access(root, os.W_OK):  # running as root: permissions are not enforced
            monkeypatch.setattr("fieldkit.data.images.os.access", lambda *a: False)
        where = cache_dir_for(root, 2)
        assert str(where).startswith(str(tmp_path / "cache"))
        scene = load_scene(root, downscale=2)
        assert scene.image(0).shape == (48, 48, 4)
        assert (where / "train" / "r_0.png").is_file()
        assert not (root / ".fieldkit").exists()
    finally:
        for d in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
            d.chmod(0o755)


def test_rgb_and_rgba_images_load_as_uint8(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    gray = np.full((5, 7), 9, np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=100)
    Image.fromarray(gray).save(tmp_path / "b.png")
    a, b = load_images([tmp_path / "a.jpg", tmp_path / "b.png"], tmp_path)
    assert a.dtype == np.uint8 and a.shape == (5, 7, 3)
    assert b.shape == (5, 7, 3) and (b == 9).all()
