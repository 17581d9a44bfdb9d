"""Ray batches drawn uniformly across the pixels of all training images."""
from __future__ import annotations

import torch
from torch import Tensor

from fieldkit.data.scene import Scene, composite

BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}


def resolve_background(name: str, scene: Scene) -> str:
    """``auto`` -> ``random`` for a scene with alpha (so alpha is learned), else ``white``."""
    if name == "auto":
        return "random" if scene.has_alpha else "white"
    if name not in BACKGROUNDS and name != "random":
        raise ValueError(f"background must be auto, white, black or random, not {name!r}")
    return name


def background_color(name: str, n: int) -> Tensor:
    """[n, 3] background: fixed for white/black, one random colour per ray for random."""
    if name == "random":
        return torch.rand(n, 3)
    return torch.tensor(BACKGROUNDS[name]).expand(n, 3)


class RayBatcher:
    """Uniform pixels over a set of images (any sizes), with their rays and target colours."""

    def __init__(self, scene: Scene, images: Tensor, background: str):
        self.scene, self.images, self.background = scene, images, background
        sizes = (scene.offsets[images + 1] - scene.offsets[images]).double()
        self.cumulative = torch.cumsum(sizes, 0)  # [I]
        self.total = int(self.cumulative[-1])

    def sample(self, n: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """origins [n, 3], dirs [n, 3], target rgb [n, 3], background [n, 3], image [n] and
        the pixel's place in its image uv [n, 2] (x, y in [0, 1])."""
        flat = torch.randint(0, self.total, (n,))
        which = torch.searchsorted(self.cumulative, flat.double(), right=True)
        start = torch.cat([torch.zeros(1, dtype=torch.float64), self.cumulative])[which].long()
        image = self.images[which]
        local = flat - start
        width = self.scene.cameras.width[image]
        xy_int = torch.stack([local % width, local // width], dim=-1)
        xy = xy_int.float() + torch.rand(n, 2)  # anywhere in the pixel footprint
        origins, dirs = self.scene.cameras.rays(image, xy)
        bg = background_color(self.background, n)
        target = composite(self.scene.lookup(image, xy_int), bg)
        size = torch.stack([width, self.scene.cameras.height[image]], -1)
        return origins, dirs, target, bg, image, xy / size
