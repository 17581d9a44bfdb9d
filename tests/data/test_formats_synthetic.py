"""Every format loads the same cameras: ngp and COLMAP copies of the demo scene agree with the
Blender original, without ../shared."""
import pytest
import torch

from fieldkit.data.demo import ray_hits
from fieldkit.data.scene import load_scene
from tests.data import synthetic


def _hit_agreement(scene, i: int) -> float:
    o, d = scene.cameras.image_rays(i)
    o_w = scene.normalisation.to_world(o.reshape(-1, 3).double())
    d_w = scene.normalisation.to_world((o + d).reshape(-1, 3).double()) - o_w
    hit, _ = ray_hits(o_w.numpy(), d_w.numpy())
    img = scene.image(i).reshape(-1, scene.pixels.shape[1])
    # RGB-only copies were composited on white: the object is where any channel is not white.
    covered = (img[:, 3] > 127) if scene.has_alpha else (img[:, :3] < 250).any(-1)
    return float((torch.from_numpy(hit) == covered).float().mean())


@pytest.mark.parametrize("text", [False, True])
def test_colmap_copy_matches_the_object(tmp_path, text):
    scene = load_scene(synthetic.colmap_scene(tmp_path, text=text))
    assert scene.format == "colmap" and len(scene) == synthetic.N_IMAGES
    assert scene.points.shape == (50, 3)
    assert len(scene.splits["test"]) == 2  # images 0 and 8
    for i in (0, 5):
        assert _hit_agreement(scene, i) > 0.97


def test_ngp_copy_matches_the_object(tmp_path):
    scene = load_scene(synthetic.ngp_scene(tmp_path, k1=0.0))
    assert scene.format == "ngp" and scene.normalisation.bound == 2
    for i in (0, 5):
        assert _hit_agreement(scene, i) > 0.97


def test_formats_agree_on_world_rays(tmp_path):
    """The same physical camera gives the same world-space rays from every loader."""
    blender = load_scene(synthetic.blender_copy(tmp_path / "b"))
    colmap = load_scene(synthetic.colmap_scene(tmp_path / "c"))
    ngp = load_scene(synthetic.ngp_scene(tmp_path / "n", k1=0.0))
    xy = torch.tensor([[3.5, 7.5], [48.0, 48.0], [90.5, 60.5]])
    idx = torch.zeros(3, dtype=torch.long)
    world = []
    for scene in (blender, colmap, ngp):
        o, d = scene.cameras.rays(idx, xy)
        o_w = scene.normalisation.to_world(o.double())
        d_w = scene.normalisation.to_world((o + d).double()) - o_w
        world.append((o_w, d_w / d_w.norm(dim=-1, keepdim=True)))
    for o, d in world[1:]:
        assert torch.allclose(o, world[0][0], atol=1e-4)
        assert torch.allclose(d, world[0][1], atol=1e-5)


def test_auto_normalisation_centres_an_orbit(tmp_path):
    scene = load_scene(synthetic.colmap_scene(tmp_path))
    # Demo cameras orbit the origin at radius 4 looking at it: the look-at point is the origin,
    # up is +z and the region of interest is 0.375 * 4 = 1.5 world units.
    n = scene.normalisation
    assert abs(n.center).max() < 0.05
    assert abs(n.scale - 1 / 1.5) < 0.01
    assert torch.allclose(scene.cameras.positions.norm(dim=-1), torch.tensor(4 / 1.5), atol=0.05)
