"""How a teacher is distilled into a student (``fieldkit distill --help`` shows these fields)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

STUDENT_DEFAULTS: dict[str, dict] = {"triplane": {"encoder": {"features": 8}},
                                     "splat": {"init_points": 50000}}
"""What a student of the default preset has beyond its model's defaults (the command line's
settings go on top).

A tri-plane student has 8 channels a plane, not 4: learning from a teacher's points and rays
it gains more from the capacity than it loses in step time, unlike a tri-plane trained from
photos. On lego, hash grid -> tri-plane, against the photos: 28.12 dB at 1000 steps with 4
channels, 28.51 with 8 (16: 28.66, twice the step time); in 75 s, run back to back, 28.20 with
4 (1199 steps), 28.34 with 8 (714 steps). From the photos in 60 s, 4 channels reached 27.59
and 27.46 in two runs, 8 reached 26.68 and 27.00 (apps/results/distill_lego_cpu_v5/sweep.md).

A splat student starts from up to 50k points of the teacher's surface (at most
``DistillConfig.splat_points_per_pixel`` a pixel of its views), not the model's 20k random
ones: on lego, hash grid -> splats against the photos, 27.30 dB at 600 steps with 20k (229 s),
27.73 with 50k (272 s), 27.50 with 20k at 714 steps (282 s); 100k: 27.91 at 600 steps for
29% more time than 50k, not compared at equal time (apps/results/distill_lego_cpu_v7/sweep.md).
"""


def student_config(kind: str, preset: str = "default"):
    """The model config a ``kind`` student starts from: ``preset``'s, plus STUDENT_DEFAULTS
    for the default preset."""
    from fieldkit.fields.registry import merge, preset_config

    config = preset_config(kind, preset)
    if preset == "default":
        config = merge(config, STUDENT_DEFAULTS.get(kind, {}))
    return config


FIELD_BANK_RAYS = 1 << 18
"""A field teacher's ray bank: rays it renders one by one, each from a random one of the
bank's views (so all of them are in it): more rays would cost render time, not add views."""
SPLAT_BANK_RAYS = 1 << 20
"""A splat teacher's ray bank: it renders whole views and the bank keeps a quarter of their
pixels (``targets.VIEW_BANK_KEEP``), so the rays set how many views it renders (2^20: ~130 of
fox at 135x240, within the render budget). What counts is the views: a student sees fewer
rays than the bank holds. Splats -> hash grid against the undistorted photos: fox 22.87 dB
with 2^20 (68 views made in 75 s) against 22.56 with 2^18 (33 views), 23.43 against 22.92
in 300 s (130 against 33 views); beer-colmap 23.40 against 23.34 in 150 s, but 23.07 against
23.20 in 38 s, where the views cost a third of the steps; lego 26.70 against 26.76 in 75 s
(apps/results/splat_to_field_cpu/bench.md)."""

DEFAULT_VOLUME_FRACTION = 0.4
"""Stage 1's share of a volumetric student's budget (``DistillConfig.volume_fraction``). On
lego at equal steps (apps/results/distill_lego_cpu_v4/sweep.md), against the photos: tri-plane
-> hash grid 27.32 dB at 0.1, 27.53 at 0.4, 27.59 at 0.6; splats -> hash grid 26.34 at 0.1,
27.00 at 0.4, 26.90 at 0.6; hash grid -> tri-plane and -> MLP within 0.06 dB from 0.1 to 0.4."""
VOLUME_FRACTION = {"mlp": 0.6}
"""Students whose stage-1 share differs from DEFAULT_VOLUME_FRACTION. An MLP's stage-1 step
(a point batch, no ray marching) costs much less than its stage-2 step, and it learns well
from points: hash grid -> MLP on lego in 75 s, against the photos, 26.04 dB at 0.4 (three
runs), 26.39 at 0.6 (two), 26.46 at 0.8, 26.35 at 0.9 (apps/results/distill_mlp_cpu)."""

SPLAT_POINT_BANK = 1 << 19
"""Stage-1 points a splat teacher answers once (its mixture is costly to query per step and
never changes). On lego, splats -> hash grid at 500 steps against the photos: 27.00 dB with
2^18, 27.17 with 2^19 (~3 s more: ~6 s in all), 27.14 with 2^20 (~12 s);
apps/results/distill_lego_cpu_v5/sweep.md."""
POINT_BANK = {"mlp": 1 << 20}
"""Students of a field teacher whose stage-1 points come from a bank the teacher answers once
(the others get fresh points every step). An MLP's stage-1 step is cheap, and the teacher's
answers were a third of it (hash grid: 6 ms of ~20 ms for 2^12 points): hash grid -> MLP on
lego in 75 s, against the photos, 26.67 and 26.70 dB with 2^20 and 2^21 points against 26.39
fresh (apps/results/distill_mlp_cpu)."""


@dataclass
class DistillConfig:
    """Targets, stages and report of a distillation. The optimisation budget (steps, seconds)
    and the learning-rate schedule are the student's ordinary training config."""

    views: int = 100
    """Views the teacher renders whole for a splat student (its training images)."""
    train_view_share: float = 1.0
    """Share of those views placed at the teacher's training cameras (as pinholes; at most one
    a camera), the rest being novel views between them. The teacher is best where its photos
    were taken, and the photos' test views lie near them: against the photos, with 1 instead
    of 0 (all novel), fox 23.31 dB against 21.65 (0.5: 22.51), lego 27.85 against 27.50, beer
    21.61 against 20.49; against the teacher on held-out novel views fox lost 0.88 dB, lego
    and beer gained 0.60 and 0.53 (apps/results/distill_splat_views_cpu/bench.md)."""
    splat_points_per_pixel: float = 0.5
    """A splat student starts from at most this many Gaussians per pixel of one target view
    (and at most ``--splat.init-points``; 0: init-points alone). Every Gaussian makes a step
    dearer and small views cannot use many, so within a budget fewer starting points buy more
    steps (apps/results/distill_beer_splat_cpu/bench.md), against the photos: fox (135x240,
    300 s) 21.73 dB with 0.5 a pixel (435 steps) against 20.86 with 1.25 (352 steps); beer
    (90x160, 150 s) 20.49 with 0.5 a pixel (7.2k), 20.10 with 1.25 (18k), 18.53 with 50k;
    lego (200x200, 300 s) 27.50 with 0.5 a pixel against 27.62 with 1.25 (50k)."""
    bank_views: int = 200
    """Novel views the ray bank of a volumetric student draws its rays from."""
    bank_rays: int | None = None
    """Rays the teacher renders for a volumetric student's stage 2, drawn at random from
    bank_views novel views (default ``bank_rays_for``: 2^18 from a field teacher, 2^20 from
    splats)."""
    view_scale: float = 1.0
    """Size of the novel views relative to the teacher's training images."""
    held_out_views: int = 8
    """Novel views, never trained on, where the student is compared with the teacher."""
    gt_views: int = 20
    """Test views (evenly spaced) where student and teacher are compared with the photos, when
    the teacher's scene is on disk (0: skip)."""
    volume_fraction: float | None = None
    """Share of a volumetric student's budget spent in stage 1 (matching density and colour at
    3D points); the rest is stage 2 (matching rendered rays). Default ``volume_fraction_for``:
    0.6 for an MLP student, 0.4 for the others (``VOLUME_FRACTION``)."""
    points_per_step: int | None = None
    """3D points per stage-1 step (default: the student's samples per step,
    ``TrainConfig.target_samples`` or its model's own: 2^14, 2^12 for an MLP). On lego,
    halving 2^15 halves a stage-1 step (hash grid ~140 -> ~70 ms) and loses nothing at equal
    time: splats -> hash grid 27.00 dB at 500 steps either way; tri-plane -> hash grid 27.53
    at 420 steps with 2^15, 27.57 at 528 with 2^14; hash grid -> tri-plane 28.06 at 800
    steps with 2^15 in 67 s, 28.19 at 1190 in 79 s."""
    mass_fraction: float = 0.75
    """Share of the stage-1 points drawn where the teacher has mass (its occupancy grid or its
    Gaussians); the rest are uniform in the box."""
    surface_fraction: float = 0.75
    """Share of those mass points drawn near the surface the teacher shows (its depth along
    bank rays, seen from the ray's direction); the others fill its occupancy grid (or its
    Gaussians) uniformly, seen from random directions."""
    density_floor: float = 0.1
    """Densities are compared as log(sigma + floor): below ~floor a sample is empty anyway
    (alpha < 1e-3 at the default step), and the log keeps large densities in range."""
    density_cap: float = 1e4
    """Teacher densities above this count as this (opaque either way)."""
    density_weight: float = 0.1
    """Weight of the log-density term against the colour term in stage 1."""
    stage2_point_weight: float = 0.1
    """Weight of the stage-1 loss (on stage2_points points) kept during stage 2, so that
    density the rays do not see stays matched. Field teachers only (on lego, 0: -0.14 dB for
    tri-plane -> hash grid, -0.18 for hash grid -> tri-plane at equal steps); with a splat
    teacher it made steps ~35% dearer for -0.1 dB (distill_lego_cpu_v4/sweep.md)."""
    point_bank: int | None = None
    """Answer this many stage-1 points once and draw every step's points from them (0: field
    teachers are queried afresh every step; default ``point_bank_for``: 2^19 from splats, 2^20
    for an MLP student of a field, the others fresh). Field teachers on lego: 2^20 made hash
    grid -> tri-plane steps ~8% cheaper but cost 0.14 dB at the same steps (0.14 dB for
    tri-plane -> hash grid too). Splats: 2^18 -> 2^19 gave +0.17 dB for ~3 s more, 2^20
    nothing more (distill_lego_cpu_v5/sweep.md)."""
    stage2_points: int | None = None
    """3D points per stage-2 step for the stage-1 loss kept in stage 2 (default: half of
    points_per_step's default; with 2^14 samples a step, 4096 instead of 8192 made hash grid
    -> tri-plane steps 10% cheaper, 0.15 dB lower at the same steps)."""
    error_sampling: float = 0.5
    """Share of each stage-2 ray batch drawn in proportion to the student's last squared
    colour error on the bank's rays (instant-ngp's error map); the rest is uniform. On lego,
    same steps, student vs teacher: splat -> hashgrid 33.22 dB against 33.03 with 0, tri-plane
    -> hashgrid 37.82 against 37.35 (vs the photos: +0.0 and +0.06 dB); ~2 ms a step."""
    alpha_weight: float = 0.1
    """Weight of the opacity term in stage 2."""
    depth_weight: float = 0.05
    """Weight of the depth term in stage 2 (box units, weighted by the teacher's opacity)."""
    seed: int = 0
    """Seed of the novel views, the ray bank and the points."""

    def volume_fraction_for(self, kind: str) -> float:
        """Stage 1's share for a ``kind`` student: ``volume_fraction``, else VOLUME_FRACTION's."""
        if self.volume_fraction is not None:
            return self.volume_fraction
        return VOLUME_FRACTION.get(kind, DEFAULT_VOLUME_FRACTION)

    def point_bank_for(self, kind: str, splat_teacher: bool) -> int:
        """Stage-1 points the teacher answers once for a ``kind`` student (0: fresh points
        every step): ``point_bank``, else SPLAT_POINT_BANK from splats and POINT_BANK's from
        a field. Splats always answer a bank (SPLAT_POINT_BANK when ``point_bank`` is 0)."""
        if self.point_bank is None:
            return SPLAT_POINT_BANK if splat_teacher else POINT_BANK.get(kind, 0)
        return self.point_bank or (SPLAT_POINT_BANK if splat_teacher else 0)

    def bank_rays_for(self, splat_teacher: bool) -> int:
        """The ray bank's size: ``bank_rays``, else FIELD_BANK_RAYS or SPLAT_BANK_RAYS."""
        if self.bank_rays is not None:
            return self.bank_rays
        return SPLAT_BANK_RAYS if splat_teacher else FIELD_BANK_RAYS

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_saved(cls, saved: dict) -> DistillConfig:
        """The config a run saved (``to_dict``), with the values of the time for the fields
        added since: runs saved before ``train_view_share`` learned from novel views only."""
        return cls(**{"train_view_share": 0.0, **saved})
