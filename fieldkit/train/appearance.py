"""Per-image appearance correction while training (``--appearance affine|bilateral``): for
captures whose photos differ in exposure, white balance or vignetting (phone cameras on
automatic exposure). gsplat's bilateral grids (``--use_bilateral_grid``, after Wang et al.
2024, "Bilateral guided radiance field processing"); the ``affine`` kind is the same with one
cell, nerfstudio's and NeRF-W's per-image appearance reduced to a colour transform.

Every camera of the scene gets a grid of 3x4 affine colour transforms over (x, y, luminance):
``(16, 16, 8)`` cells for ``bilateral``, one for ``affine``. A rendered pixel of a training view
is mapped by the transform its camera's grid holds at the pixel's position and luminance,
trilinearly interpolated, before the loss against the photo. The scene itself then learns
the photos' common appearance, and held-out views, exports and the viewer draw that, without
any transform (as gsplat evaluates; ``fieldkit eval`` also reports the colour-corrected PSNR,
which leaves each test photo's own exposure out of the score).

The grids store their difference from the identity, start at zero, and learn by their own
row-wise Adam (``RowAdam``, a row per cell: a ray batch touches a third of them) with, for
bilateral grids, gsplat's total-variation loss over the cells of the cameras each step saw
(at most ``TV_GRIDS`` of them). They start learning at ``start`` of the budget. After every
step the training views' grids are shifted to a mean of zero: the scene, not the transforms,
carries what all photos share. Without that the transforms drift together and the scene
with them (on the demo scene with varied photos, a tri-plane's affine transforms all darkened
by 3-6% and its held-out views ended 0.8 dB below training without transforms), and a weight
decay inside Adam instead pulled them back to the identity at the full learning rate once the
scene fitted (they learned ~1% of the photos' changes).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fieldkit.train.row_adam import RowAdam

GRID_SHAPES = {"affine": (1, 1, 1), "bilateral": (8, 16, 16)}
"""Cells per grid, (luminance, y, x): one global transform, or gsplat's bilateral grid."""
TV_GRIDS = 4
"""Most grids the total-variation term covers in one step (``AppearanceRefiner.loss``)."""
LUMA = (0.299, 0.587, 0.114)
"""Weights of the luminance that places a pixel along a grid's third axis (Rec. 601, gsplat's)."""


class AppearanceGrids(nn.Module):
    """One grid of affine colour transforms per camera (see module docstring)."""

    def __init__(self, n_images: int, shape: tuple[int, int, int], device=None):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.delta = nn.Parameter(torch.zeros(n_images, *self.shape, 12, device=device))
        """[N, L, H, W, 12] each cell's 3x4 transform (row-major) minus the identity."""

    def transforms(self, uv: Tensor, luma: Tensor, image: Tensor) -> Tensor:
        """The interpolated transforms [R, 3, 4] at pixels ``uv`` [R, 2] (x, y in [0, 1] of
        the image) with luminance ``luma`` [R] in views ``image`` [R]."""
        n_l, n_h, n_w = self.shape
        coords = torch.stack([luma.clamp(0, 1) * (n_l - 1), uv[:, 1].clamp(0, 1) * (n_h - 1),
                              uv[:, 0].clamp(0, 1) * (n_w - 1)], -1)          # [R, 3]
        low = coords.floor().long()
        frac = coords - low
        high = torch.minimum(low + 1, torch.tensor([n_l - 1, n_h - 1, n_w - 1], device=low.device))
        corners = torch.tensor([[(c >> k) & 1 for k in range(3)] for c in range(8)],
                               device=low.device, dtype=torch.bool)                # [8, 3]
        idx = torch.where(corners, high[:, None], low[:, None])                    # [R, 8, 3]
        w = torch.where(corners, frac[:, None], 1 - frac[:, None]).prod(-1)        # [R, 8]
        flat = (image.long()[:, None] * n_l + idx[..., 0]) * n_h * n_w \
            + idx[..., 1] * n_w + idx[..., 2]                                        # [R, 8]
        # one gather of all eight corners: its backward is one scatter into the table, in a
        # fixed order (indexing with [] accumulates in a varying one: resume would drift)
        out = (self.delta.reshape(-1, 12).index_select(0, flat.reshape(-1)).view(-1, 8, 12)
               * w[..., None]).sum(1)
        eye = torch.eye(3, 4, dtype=out.dtype, device=out.device)
        return out.view(-1, 3, 4) + eye

    def forward(self, rgb: Tensor, uv: Tensor, image: Tensor, alpha: Tensor | None = None,
                background: Tensor | None = None) -> Tensor:
        """Rendered colours ``rgb`` [R, 3] of pixels ``uv`` [R, 2] in views ``image`` [R] ->
        the colours their views' transforms make of them [R, 3]. With ``alpha`` [R, 1] and
        ``background`` [R, 3] (scenes whose photos have alpha: the background is not
        photographed), only the premultiplied foreground ``rgb - (1 - alpha) background`` is
        transformed, its offset scaled by alpha."""
        fg = rgb if alpha is None else rgb - (1 - alpha) * background
        colour = fg if alpha is None else fg / alpha.clamp_min(1e-4)
        luma = colour @ torch.tensor(LUMA, dtype=rgb.dtype, device=rgb.device)
        a = self.transforms(uv, luma, image).to(rgb.dtype)
        out = torch.einsum("rij,rj->ri", a[:, :, :3], fg)
        if alpha is None:
            return out + a[:, :, 3]
        return out + alpha * a[:, :, 3] + (1 - alpha) * background

    def total_variation(self, images: Tensor) -> Tensor:
        """Mean squared difference of neighbouring cells in the grids of ``images`` [B]."""
        g = self.delta[images]
        terms = [(g.diff(dim=d) ** 2).mean() for d in (1, 2, 3) if g.shape[d] > 1]
        return sum(terms, torch.zeros((), device=g.device))


def pixel_uv(height: int, width: int, device=None) -> Tensor:
    """[H * W, 2] the centres of an image's pixels, x then y, in [0, 1] of its size."""
    y, x = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device),
                          indexing="ij")
    return torch.stack([(x.reshape(-1) + 0.5) / width, (y.reshape(-1) + 0.5) / height], -1)


class AppearanceRefiner:
    """What a trainer holds for ``--appearance``: the grids of every camera of the scene, their
    optimiser, their share of the learning-rate schedule and their place in checkpoints."""

    def __init__(self, n_images: int, train_views: Tensor, kind: str, lr: float,
                 tv_weight: float, start: float = 0.0, device: torch.device | str = "cpu"):
        """n_images: the scene's cameras; train_views [T]: those whose grids are learned (the
        others keep the identity); start: the fraction of the budget before they learn."""
        if kind not in GRID_SHAPES:
            raise ValueError(f"appearance must be off, {' or '.join(GRID_SHAPES)}, not {kind!r}")
        self.kind, self.tv_weight = kind, float(tv_weight)
        self.grids = AppearanceGrids(n_images, GRID_SHAPES[kind], device)
        self.train_views = train_views.to(self.grids.delta.device)
        self.adam = RowAdam(self.grids.delta, lr, weight_decay=0.0, row_size=12)
        self.start, self.learning = float(start), start <= 0

    def apply(self, rgb: Tensor, uv: Tensor, image: Tensor, alpha: Tensor | None = None,
              background: Tensor | None = None) -> Tensor:
        """Rendered colours [R, 3] of pixels ``uv`` [R, 2] of views ``image`` [R], as each
        view's photo would show them (``AppearanceGrids.forward``)."""
        return self.grids(rgb, uv, image, alpha, background)

    def loss(self, image: Tensor) -> Tensor | None:
        """The total-variation term over the grids of the views in this step (``image`` [R]),
        at most ``TV_GRIDS`` of them, chosen at random (a ray batch sees every view, and the
        term over all their grids took 17 ms a step on fox)."""
        if not self.tv_weight or self.kind == "affine":
            return None
        seen = torch.unique(image)
        if len(seen) > TV_GRIDS:
            seen = seen[torch.randperm(len(seen), device=seen.device)[:TV_GRIDS]]
        return self.tv_weight * self.grids.total_variation(seen)

    def set_lr_factor(self, factor: float, progress: float = 1.0) -> None:
        """The schedule's ``factor`` at ``progress`` (fraction of the budget) in [0, 1]."""
        self.learning = progress >= self.start
        self.adam.set_lr_factor(factor)

    def zero_grad(self) -> None:
        self.adam.zero_grad()

    def step(self) -> None:
        """A step of Adam, then the training views' grids shifted to a mean of zero (nothing
        before ``start``)."""
        if not self.learning:
            return
        self.adam.step()
        with torch.no_grad():
            delta = self.grids.delta
            delta[self.train_views] -= delta[self.train_views].mean(0, keepdim=True)

    @torch.no_grad()
    def grey_gains(self, views: Tensor) -> Tensor:
        """[V, 9, 3] what the transforms of ``views`` [V] make of mid-grey, divided by it, at
        nine places of the photo (a 3x3 grid from its corners to its centre)."""
        views = views.to(self.grids.delta.device)
        t = torch.tensor([0.0, 0.5, 1.0], device=views.device)
        uv = torch.cartesian_prod(t, t).repeat(len(views), 1)                     # [V * 9, 2]
        image = views.repeat_interleave(9)
        grey = torch.full((len(uv), 3), 0.5, device=views.device)
        return (self.grids(grey, uv, image) / 0.5).view(len(views), 9, 3)

    def stats(self, views: Tensor) -> dict[str, float]:
        """For the log: how much the transforms of ``views`` [V] change mid-grey, on average
        (0.05: by 5%)."""
        return {"appearance_change": float((self.grey_gains(views) - 1).abs().mean())}

    def state_tensors(self) -> dict[str, Tensor]:
        return self.adam.state_tensors("appearance.")

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        self.adam.load_state_tensors(tensors, "appearance.")


def vary_exposure(scene, views: Tensor, strength: float, tilt: float | None = None,
                  seed: int = 0):
    """``scene`` with the photos of ``views`` [V] given known appearance changes, seeded, for
    tests and benchmarks: each colour channel times exp(N(0, strength)) (exposure and white
    balance) and a brightness tilt across the photo, times 1 + N(0, tilt) x (x from -1 at the
    left edge to 1 at the right; ``tilt`` defaults to ``strength``). Both are centred over the
    views (the photos' geometric mean gain is 1 and their mean tilt 0), so the photos' common
    appearance is the scene's own. Returns a new Scene."""
    from dataclasses import replace

    g = torch.Generator().manual_seed(seed)
    logs = torch.randn(len(views), 3, generator=g) * strength
    gains = torch.exp(logs - logs.mean(0))
    tilts = torch.randn(len(views), generator=g) * (strength if tilt is None else tilt)
    tilts = tilts - tilts.mean()
    pixels = scene.pixels.clone()
    for k, i in enumerate(views.tolist()):
        h, w = int(scene.cameras.height[i]), int(scene.cameras.width[i])
        x = pixel_uv(h, w)[:, :1] * 2 - 1                                      # [H * W, 1]
        part = pixels[scene.offsets[i]:scene.offsets[i + 1]]
        rgb = part[:, :3].float() * gains[k] * (1 + tilts[k] * x)
        part[:, :3] = rgb.round().clamp(0, 255).to(torch.uint8)
    return replace(scene, pixels=pixels)
