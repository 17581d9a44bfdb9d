"""`fieldkit export splats`: a splat run as a standard 3DGS .ply in the scene's world units, as
one of the web viewers' smaller files (.spz, .splat, SuperSplat's .compressed.ply), or as the
output folder of the original 3DGS trainer (the .ply and its cameras.json)."""
from __future__ import annotations

from pathlib import Path

from fieldkit.data.normalize import Normalisation
from fieldkit.errors import FieldkitError
from fieldkit.export.mesh import check_suffix
from fieldkit.render.crop import CropBox, crop_model
from fieldkit.splats.gs_folder import (CAMERAS_JSON, CFG_ARGS, PLY_NAME, write_cameras_json,
                                       write_cfg_args)
from fieldkit.splats.ply import write_splat_ply
from fieldkit.splats.transform import splats_to_world


FORMATS = {
    ".ply": "3DGS layout",
    ".compressed.ply": "SuperSplat compressed layout (Gaussians of opacity >= 1/255)",
    ".spz": "SPZ version 3",
    ".splat": ".splat layout (base colours only)",
}
"""Files ``export splats`` writes, by suffix, and how the summary describes them."""


def splat_format(out: Path) -> str:
    """The FORMATS key of ``out`` (after a one-line error for another suffix)."""
    name = out.name.lower()
    if name.endswith(".compressed.ply"):
        return ".compressed.ply"
    return check_suffix(out, (".ply", ".spz", ".splat")).suffix.lower()


SPZ_SH_BITS = 6
"""Bits a .spz keeps of each SH coefficient above the base colour (its bytes hold 8; fewer zero
bits pack smaller). The reference library keeps 5 of degree 1 and 4 above. On lego (200x200,
a 300 s splat run of 23k Gaussians at SH degree 3, 28.27 dB on 20 test photos), against the
photos: 5/4 bits 0.39 MiB and 27.93 dB, 6 bits 0.53 MiB and 28.25, 8 bits 0.77 MiB and 28.26;
the .ply is 5.5 MiB (apps/results/web_formats_cpu/bench.md)."""


def write_splats(path: Path, params: dict, fmt: str, spz_sh_bits: int | None = None) -> Path:
    """Write splat params to ``path`` in ``fmt`` (a FORMATS key); a .spz keeps ``spz_sh_bits``
    of its SH coefficients (default SPZ_SH_BITS)."""
    from fieldkit.splats.compressed_ply import write_compressed_ply
    from fieldkit.splats.splat_file import write_splat_file
    from fieldkit.splats.spz import write_spz

    if fmt == ".spz":
        bits = SPZ_SH_BITS if spz_sh_bits is None else spz_sh_bits
        if not 1 <= bits <= 8:
            raise FieldkitError(f"--spz-sh-bits must be 1 to 8, not {bits}")
        return write_spz(path, params, sh_bits=(bits, bits))
    writers = {".ply": write_splat_ply, ".compressed.ply": write_compressed_ply,
               ".splat": write_splat_file}
    return writers[fmt](path, params)


def export_splats(run_dir: Path, out: Path, spz_sh_bits: int | None = None,
                  crop: CropBox | None = None) -> tuple[Path, int]:
    """Write the Gaussians of a splat run to ``out`` (world units): a .ply (INRIA 3DGS layout),
    a .compressed.ply, a .spz or a .splat (``FORMATS``), or, when ``out`` has no suffix, a 3DGS
    model folder: ``out/point_cloud/iteration_N/point_cloud.ply`` (N: the run's steps),
    ``out/cameras.json`` (its training cameras) and ``out/cfg_args`` (its scene folder and
    downscale). ``spz_sh_bits``: see ``write_splats``. ``crop``: only the Gaussians whose
    centres lie in this box (box coordinates). Returns (the file's path, number of
    Gaussians)."""
    from fieldkit.train.run import last_log_entry, load_model, read_config

    out = Path(out)
    folder = out.suffix == ""
    fmt = None if folder else splat_format(out)
    model = load_model(run_dir)
    if getattr(model, "kind", None) != "splat":
        raise FieldkitError(f"{run_dir} holds a {model.kind} model; `export splats` needs a splat "
                            f"run (train one with --model splat, or convert this one with "
                            f"`fieldkit distill {run_dir} --to splat`)")
    crop_model(model, crop, str(run_dir))
    cfg = read_config(run_dir)
    norm = Normalisation.from_dict(cfg["normalisation"])
    params = splats_to_world(model.export_params(), norm)
    if not folder:
        return write_splats(out, params, fmt, spz_sh_bits), model.num_gaussians
    if out.exists() and not out.is_dir():
        raise FieldkitError(f"--out {out} is a file; give a .ply file or a folder for the 3DGS "
                            "output layout")
    steps = (last_log_entry(run_dir) or {}).get("step", 0)
    ply = out / "point_cloud" / f"iteration_{steps}" / PLY_NAME
    ply.parent.mkdir(parents=True, exist_ok=True)
    write_splat_ply(ply, params)
    _write_world_cameras(run_dir, norm, out / CAMERAS_JSON)
    write_cfg_args(out / CFG_ARGS, cfg.get("scene", ""), str(out), model.config.sh_degree,
                   int(cfg.get("downscale", 1)), cfg.get("train", {}).get("background") == "white")
    return ply, model.num_gaussians


def _write_world_cameras(run_dir: Path, norm: Normalisation, path: Path) -> None:
    """The run's training cameras in world units as a 3DGS cameras.json (pinholes: lens
    distortion is left out, as the splats were trained on undistorted photos)."""
    from fieldkit.distill.views import CAMERAS_FILE
    from fieldkit.data.cameras import Cameras
    from fieldkit.train.checkpoint import load_tensors

    file = Path(run_dir) / CAMERAS_FILE
    if not file.is_file():
        raise FieldkitError(f"{run_dir} has no {CAMERAS_FILE} (a run trained before fieldkit "
                            "kept its cameras); export a .ply file instead")
    cams = Cameras.from_state_dict(load_tensors(file))
    world = cams.to_world(norm)
    write_cameras_json(path, world.c2w.double().numpy(), world.K.double().numpy(),
                       world.width.numpy(), world.height.numpy())
