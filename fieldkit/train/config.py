"""Training configuration (shown by ``fieldkit train --help`` through the CLI dataclass)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal


@dataclass
class TrainConfig:
    """How a model is optimised. Budgets: whichever of max_steps / max_time comes first."""

    max_steps: int | None = None
    """Stop after this many steps (default 20000 when no budget is given)."""
    max_time: float | None = None
    """Stop after this many seconds of training (evaluation and checkpoints excluded)."""
    lr: float | None = None
    """Peak learning rate of Adam (default: the model's own: 1e-2 for hashgrid, 2e-2 for
    triplane, 1e-2 for mlp). For splat it multiplies the per-parameter rates of 3DGS (default 1)."""
    warmup_steps: int = 20
    """Linear learning-rate warm-up from 1% of lr. Short: on lego (200 px), 420 hash-grid
    steps from the photos reached 23.31 dB with 20 against 22.74 with 100, and distilled from
    a tri-plane 27.26 against 26.71 (apps/results/distill_lego_cpu_v3)."""
    target_samples: int | None = None
    """Samples per step the ray batch adapts to (nerfacc-style dynamic batch). Default: the
    model's own, 2^14 for hashgrid and triplane (which trained lego furthest in a fixed CPU
    time: apps/results/lego_cpu) and 2^12 for mlp (see ``MlpModel``)."""
    distortion_weight: float = 0.0
    """Weight of mip-NeRF 360's distortion loss (volumetric models), with distances measured
    in its contracted space (box units inside the unit ball, the background squeezed beyond):
    it pulls each ray's weight into one short stretch, which clears fog from empty space
    (0: off)."""
    pose_opt: bool = False
    """Refine the training cameras' poses with the scene (nerfstudio's camera optimiser,
    gsplat's pose_opt): a rotation and a translation per training camera, learned by their own
    Adam. For captures whose poses are a little off; held-out views keep their given poses.
    The corrected cameras are saved in RUN/cameras.safetensors (``fieldkit/train/pose_opt.py``)."""
    pose_lr: float | None = None
    """Peak learning rate of the pose corrections (rotation in radians, translation in box
    units), under the run's schedule. Default: 1e-3 for hashgrid, triplane and mlp (every
    camera moves every step), 3e-3 for splat (a camera moves once an epoch)."""
    pose_weight_decay: float = 1e-2
    """Adam weight decay of the pose corrections (nerfstudio's): pulls them towards the given
    poses, so that exact poses stay nearly put and the cameras do not drift as a whole."""
    pose_start: float | None = None
    """Fraction of the budget before the pose corrections learn; until then the rays are not
    corrected. Default: the model's ``default_pose_start`` (tri-plane 0.25: while the scene is
    still a blur the corrections drift with its errors; hash grid and splat 0)."""
    appearance: Literal["off", "affine", "bilateral"] = "off"
    """Learn a colour transform per training view (``fieldkit/train/appearance.py``), for
    photos that differ in exposure, white balance or vignetting: ``affine`` one 3x4 transform
    a view, ``bilateral`` gsplat's bilateral grid of them over (x, y, luminance), 16x16x8.
    The scene learns the photos' common appearance; held-out views and exports draw it
    without any transform."""
    appearance_lr: float | None = None
    """Peak learning rate of the appearance transforms, under the run's schedule (default
    1e-2)."""
    appearance_start: float = 0.25
    """Fraction of the budget before the transforms learn: while the scene is still a blur,
    they would take on its errors as well (demo scene, tri-plane, 400 steps, affine: from the
    first step 1.4 dB below no transforms on consistent photos, from 0.25 0.17 dB below)."""
    appearance_tv: float = 10.0
    """Weight of the bilateral grids' total-variation loss (gsplat's), over the grids of the
    views each step saw."""
    init_rays: int = 1024
    """Rays in the first batch."""
    max_rays: int = 8192
    """Upper limit of rays per batch."""
    background: str = "auto"
    """white, black, random (a random colour per ray, so alpha is learned: +0.9 dB on lego,
    apps/results/lego_cpu) or auto (random for scenes with alpha, else white). Runs trained
    on random are evaluated and rendered on white."""
    eval_every: int = 500
    """Steps between evaluations on a few held-out views."""
    eval_views: int = 3
    """Held-out views rendered at each periodic evaluation."""
    checkpoint_every: float = 60.0
    """Seconds of training between checkpoints."""
    log_every: int = 10
    """Steps between log.jsonl lines."""
    seed: int = 0
    """Seed of every random choice (ray batches, jitter, grid updates)."""
    weights: Literal["float32", "float16"] = "float32"
    """Precision of the weights in model.safetensors: float16 about halves the file (hash grid
    13.5 -> 7.0 MiB, splats 3.0 -> 1.5; the MLP's 0.78 -> 0.66, its occupancy grid being most
    of it). Renders of the demo scene from float16 weights match float32's to 91 dB PSNR (hash
    grid, tri-plane), 66 (MLP) and 72 (splats), and their PSNR against the photos moves by at
    most 0.003 dB (apps/results/weights_fp16). Checkpoints keep float32: --resume is exact."""

    @property
    def step_budget(self) -> int:
        if self.max_steps is None and self.max_time is None:
            return 20000
        return self.max_steps if self.max_steps is not None else 1 << 62

    def to_dict(self) -> dict:
        return asdict(self)


def resumed_config(saved: dict, given: TrainConfig) -> TrainConfig:
    """The config of a resumed run: its saved settings (``saved``, a ``to_dict``), with the
    budget given now, if any, in place of the saved budget as a whole. ``--resume --max-steps
    N`` then continues to N steps even when the first run stopped at its ``--max-time``
    (keeping the saved time limit would stop it at once); no budget given: the saved one."""
    config = TrainConfig(**saved)
    if given.max_steps is None and given.max_time is None:
        return config
    return replace(config, max_steps=given.max_steps, max_time=given.max_time)


def lr_factor(step: int, progress: float, warmup_steps: int) -> float:
    """Warm-up, then step decay by 1/3 at 50%, 75% and 90% of the budget (nerfacc's schedule).

    ``progress`` in [0, 1] is the larger of the step and the time fraction of the budget.
    """
    warm = min(1.0, 0.01 + 0.99 * step / max(1, warmup_steps))
    decay = 0.33 ** sum(progress >= m for m in (0.5, 0.75, 0.9))
    return warm * decay
