"""`fieldkit eval`, `fieldkit render` and `fieldkit export`: what a run gives out."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fieldkit.commands.common import Crop, Positional, print_metrics, report_eval
from fieldkit.errors import FieldkitError


@dataclass
class Eval:
    """Evaluate a run on its test views; writes RUN/metrics.json. Or a splat file of any
    trainer, on its dataset's test photos."""

    run_dir: Positional[Path]
    """Run directory, or a splat file of any trainer or its folder (as `fieldkit export`
    takes them) with its dataset (--scene, unless its folder names it)."""
    scene: Path | None = None
    """A splat file's dataset, in whose world units it is: its test photos are the reference
    (as `fieldkit distill --scene`)."""
    downscale: int = 1
    """A splat file's dataset: the image downscale of its photos."""
    ply_transform: Path | None = None
    """A splat file's frame, as for `fieldkit export`."""
    out: Path | None = None
    """A splat file's results: metrics.json and renders/test/ (default: NAME-eval beside
    it)."""

    def run(self) -> None:
        from fieldkit.export.subject import check_exists, is_splat_path

        check_exists(self.run_dir)
        if not is_splat_path(self.run_dir):
            if self.scene is not None or self.ply_transform is not None or self.out is not None:
                raise FieldkitError("--scene, --ply-transform and --out are for a splat file; a "
                                    "run is evaluated on its own scene, into RUN/metrics.json")
            report_eval(self.run_dir)
            return
        from fieldkit.train.evaluate import evaluate_file

        m, out = evaluate_file(self.run_dir, self.scene, self.downscale, self.ply_transform,
                               self.out)
        print_metrics(out / "metrics.json", m)


@dataclass
class Render:
    """Render a video along a camera path, of a run or a splat file."""

    run_dir: Positional[Path]
    """Run directory, or a splat file of any trainer or its folder (as `fieldkit export`
    takes them)."""
    out: Path
    """Output video file (.mp4)."""
    path: str = "orbit"
    """Camera path: orbit, spiral, interp (smooth, through the training cameras), test, or a
    .json camera path file (fieldkit frames or nerfstudio's camera_path.json)."""
    frames: int = 120
    """Number of frames."""
    fps: int = 30
    """Frames per second."""
    width: int | None = None
    """Frame width (default: the training images' width)."""
    height: int | None = None
    """Frame height (default: the training images' height)."""
    depth: bool = False
    """Put a colour-mapped depth image beside each frame (same as --output both)."""
    output: Literal["rgb", "depth", "both"] | None = None
    """rgb, depth (colour mapped) or both side by side (default rgb)."""
    fov: float | None = None
    """Vertical field of view in degrees (default: the camera path's own)."""
    crop: Crop = None
    """Show only what lies in the box X0 Y0 Z0 X1 Y1 Z1 (box coordinates, as the viewer's Crop
    box panel shows them; a splat file's own coordinates)."""
    scene: Path | None = None
    """A splat file's dataset, as for `fieldkit export` (its cameras give the paths; --path
    test needs it)."""
    downscale: int = 1
    """A splat file's views: the image downscale of --scene's cameras."""
    ply_transform: Path | None = None
    """A splat file's frame, as for `fieldkit export`."""

    def run(self) -> None:
        from fieldkit.export.render import render_video
        from fieldkit.render.crop import CropBox

        out = render_video(self.run_dir, self.out, self.path, self.frames, self.fps, self.width,
                           self.height, self.depth, self.output, self.fov,
                           CropBox.from_flat(self.crop), scene=self.scene,
                           downscale=self.downscale, ply_transform=self.ply_transform)
        print(f"video      {out}")


@dataclass
class Export:
    """Export a mesh, point cloud or splat file from a run or a splat file (world units and
    axes)."""

    kind: Positional[Literal["mesh", "points", "splats"]]
    """What to export."""
    run_dir: Positional[Path]
    """Run directory, or a splat file of any trainer (3DGS .ply, .compressed.ply, .spz,
    .splat, .ksplat, .sog, a SOG folder, a gsplat or splatfacto checkpoint) or its folder (as
    `fieldkit view` takes them): `export splats` converts it to another format, `export mesh`
    and `export points` work from its renders."""
    out: Path
    """Output file (.ply, .obj or .glb for meshes). splats: a 3DGS .ply; for web viewers a
    .spz (about a tenth of the .ply), a .compressed.ply (SuperSplat) or a .splat (base colours
    only); or a folder (no suffix) in the original 3DGS trainer's output layout:
    point_cloud/iteration_N/point_cloud.ply and the training cameras in cameras.json. Any
    kind: .html writes one self-contained web page that opens offline in any browser (viser's
    WebGL client; splats in base colours)."""
    method: Literal["mc", "tsdf", "poisson"] | None = None
    """Mesh extraction: mc (marching cubes on the density; density fields), tsdf (fused
    rendered depth) or poisson (screened Poisson on the rendered point cloud); tsdf and
    poisson mesh every model, splats included. Default: mc for a density field, tsdf for
    splats."""
    resolution: int = 256
    """Marching-cubes lattice points per side of the box (mc), voxels per side of the
    region of interest (tsdf), or octree cells per side of the points' extent (poisson,
    rounded to a power of two)."""
    views: int | None = None
    """Training views rendered: fused into a mesh (tsdf; default 100) or lifted into points
    (points: default 32; poisson: 64)."""
    threshold: str = "auto"
    """Density of the isosurface, or auto (Otsu's split of the log-density histogram)."""
    target_faces: int | None = None
    """Decimate the mesh to about this many faces (quadric simplification)."""
    num: int | None = None
    """Points in a point-cloud export (default 1M) or reconstructed by poisson (default
    300k); a random subset when more are found."""
    spz_sh_bits: int = 6
    """.spz: bits kept of each view-dependent colour coefficient (1-8; fewer pack smaller).
    See SPZ_SH_BITS in fieldkit/export/splats.py for what each costs."""
    min_opacity: float = 0.0
    """splats: leave out the Gaussians less opaque than this (0: keep all)."""
    max_sh_degree: int | None = None
    """splats: keep the view-dependent colour up to this SH degree (0: base colours only;
    default: all the run has)."""
    crop: Crop = None
    """Export only what lies in the box X0 Y0 Z0 X1 Y1 Z1 (box coordinates, as the viewer's
    Crop box panel shows them; a splat file's own coordinates): a mesh's lattice covers the
    box alone, at the spacing --resolution gives its longest side, and surfaces it cuts are
    closed; splats keep the Gaussians whose centres lie inside."""
    scene: Path | None = None
    """A splat file's dataset, in whose world units it is (as `fieldkit distill --scene`):
    its training cameras give the views that meshes and points are made from. Without it,
    the cameras.json of the 3DGS output folder the file lies in, else views around it."""
    downscale: int = 1
    """A splat file's views: the image downscale of --scene's cameras, of cameras.json's, or
    of the 256 px views around it."""
    ply_transform: Path | None = None
    """A splat file's frame, as for `fieldkit distill`: nerfstudio's
    dataparser_transforms.json or `gsplat`."""

    def run(self) -> None:
        from fieldkit.export.run import export_run
        from fieldkit.render.crop import CropBox

        _, summary = export_run(self.kind, self.run_dir, self.out, self.method, self.resolution,
                                self.views, self.threshold, self.target_faces, self.num,
                                spz_sh_bits=self.spz_sh_bits, crop=CropBox.from_flat(self.crop),
                                min_opacity=self.min_opacity, max_sh_degree=self.max_sh_degree,
                                scene=self.scene, downscale=self.downscale,
                                ply_transform=self.ply_transform)
        print(summary)
