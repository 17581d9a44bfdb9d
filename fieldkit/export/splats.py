"""`fieldkit export splats`: a splat run as a standard 3DGS .ply in the scene's world units, as
one of the web viewers' smaller files (.spz, .splat, SuperSplat's .compressed.ply), as a
self-contained web page (.html, ``web_page.py``), or as the output folder of the original 3DGS
trainer (the .ply and its cameras.json)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from fieldkit.errors import FieldkitError, warn
from fieldkit.export.mesh import check_suffix
from fieldkit.render.crop import CropBox, crop_model
from fieldkit.splats.gs_folder import (CAMERAS_JSON, CFG_ARGS, PLY_NAME, write_cameras_json,
                                       write_cfg_args)
from fieldkit.splats.ply import sh_degree_of, write_splat_ply
from fieldkit.splats.transform import splats_to_world


FORMATS = {
    ".ply": "3DGS layout",
    ".compressed.ply": "SuperSplat compressed layout (Gaussians of opacity >= 1/255)",
    ".spz": "SPZ version 3",
    ".splat": ".splat layout (base colours only)",
    ".html": "web page (viser's WebGL splats, base colours)",
}
"""Files ``export splats`` writes, by suffix, and how the summary describes them."""


def splat_format(out: Path) -> str:
    """The FORMATS key of ``out`` (after a one-line error for another suffix)."""
    name = out.name.lower()
    if name.endswith(".compressed.ply"):
        return ".compressed.ply"
    return check_suffix(out, (".ply", ".spz", ".splat", ".html")).suffix.lower()


SPZ_SH_BITS = 6
"""Bits a .spz keeps of each SH coefficient above the base colour (its bytes hold 8; fewer zero
bits pack smaller). The reference library keeps 5 of degree 1 and 4 above. On lego (200x200,
a 300 s splat run of 23k Gaussians at SH degree 3, 28.27 dB on 20 test photos), against the
photos: 5/4 bits 0.39 MiB and 27.93 dB, 6 bits 0.53 MiB and 28.25, 8 bits 0.77 MiB and 28.26;
the .ply is 5.5 MiB (apps/results/web_formats_cpu/bench.md)."""


def check_spz_sh_bits(bits: int | None) -> int:
    """``--spz-sh-bits`` (None: SPZ_SH_BITS), after a one-line error outside 1-8."""
    bits = SPZ_SH_BITS if bits is None else bits
    if not 1 <= bits <= 8:
        raise FieldkitError(f"--spz-sh-bits must be 1 to 8, not {bits}")
    return bits


@dataclass(frozen=True)
class SplatFilter:
    """Gaussians and colour bands left out of an exported file, to make it smaller."""

    min_opacity: float = 0.0
    """Keep the Gaussians at least this opaque (0 <= x < 1; 0: all). Faint Gaussians are
    many in splat runs (most of fox's are below 0.05) and add little to any view."""
    max_sh_degree: int | None = None
    """Keep the view-dependent colour up to this SH degree (0: base colours only; None: all).
    Degree 3 holds 45 of a Gaussian's 59 numbers in a .ply."""

    def check(self) -> SplatFilter:
        """Itself, after a one-line error for a value out of range."""
        if not 0.0 <= self.min_opacity < 1.0:
            raise FieldkitError(f"--min-opacity must be at least 0 and below 1, not "
                                f"{self.min_opacity}")
        if self.max_sh_degree is not None and not 0 <= self.max_sh_degree <= 3:
            raise FieldkitError(f"--max-sh-degree must be 0 to 3, not {self.max_sh_degree}")
        return self

    def apply(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """Splat params (``SplatModel.export_params`` layout) with the filter applied."""
        out = dict(params)
        if self.min_opacity > 0:
            keep = torch.sigmoid(out["opacities"]) >= self.min_opacity
            if not bool(keep.any()):
                raise FieldkitError(f"no Gaussian is at least {self.min_opacity:g} opaque; "
                                    "lower --min-opacity")
            out = {k: v[keep] for k, v in out.items()}
        if self.max_sh_degree is not None:
            out["shN"] = out["shN"][:, :(self.max_sh_degree + 1) ** 2 - 1]
        return out


def write_splats(path: Path, params: dict, fmt: str, spz_sh_bits: int | None = None,
                 antialiased: bool = False) -> Path:
    """Write splat params to ``path`` in ``fmt`` (a FORMATS key); a .spz keeps ``spz_sh_bits``
    of its SH coefficients (default SPZ_SH_BITS) and flags ``antialiased`` splats (the other
    files have no such flag)."""
    from fieldkit.splats.compressed_ply import write_compressed_ply
    from fieldkit.splats.splat_file import write_splat_file
    from fieldkit.splats.spz import write_spz

    if fmt == ".spz":
        bits = check_spz_sh_bits(spz_sh_bits)
        return write_spz(path, params, sh_bits=(bits, bits), antialiased=antialiased)
    writers = {".ply": write_splat_ply, ".compressed.ply": write_compressed_ply,
               ".splat": write_splat_file}
    return writers[fmt](path, params)


def export_splats(source, out: Path, spz_sh_bits: int | None = None,
                  crop: CropBox | None = None, keep: SplatFilter = SplatFilter(),
                  page=None) -> tuple[Path, int]:
    """Write the Gaussians of a splat run or of a splat file (``source``: its path or an export
    ``Subject``) to ``out`` (world units): a .ply (INRIA 3DGS layout), a .compressed.ply, a .spz
    or a .splat (``FORMATS``), or, when ``out`` has no suffix, a 3DGS model folder:
    ``out/point_cloud/iteration_N/point_cloud.ply`` (N: the run's steps),
    ``out/cameras.json`` (its training cameras, or the views a file was opened with) and
    ``out/cfg_args`` (its scene folder and downscale). ``spz_sh_bits``: see ``write_splats``.
    ``crop``: only the Gaussians whose centres lie in this box (box coordinates); ``keep``: the
    faint Gaussians and the SH bands left out; ``page``: where a web page (.html) opens
    (default the run's first view). Returns (the file's path, number of Gaussians written)."""
    from fieldkit.export.subject import open_subject

    out = Path(out)
    folder = out.suffix == ""
    fmt = None if folder else splat_format(out)
    keep.check()
    if fmt == ".spz":
        check_spz_sh_bits(spz_sh_bits)          # before the model is loaded
    subject = open_subject(source)
    model, name = subject.model, subject.run_dir or subject.label
    if getattr(model, "kind", None) != "splat" and fmt == ".html":
        raise FieldkitError(f"{name} holds a {model.kind} model, not splats; for a web page "
                            f"of it run `fieldkit export mesh {name} --out {out}` (or "
                            f"points), or distil it to splats first (`fieldkit distill "
                            f"{name} --to splat`)")
    if getattr(model, "kind", None) != "splat":
        raise FieldkitError(f"{name} holds a {model.kind} model; `export splats` needs a splat "
                            f"run (train one with --model splat, or convert this one with "
                            f"`fieldkit distill {name} --to splat`)")
    crop_model(model, subject.take_crop(crop), subject.label)   # a file's: its own frame
    norm = subject.normalisation
    params = keep.apply(model.export_params())
    n = len(params["means"])
    antialiased = model.config.render.antialiased
    if antialiased and fmt != ".spz":
        warn(f"{name} was trained in the antialiased mode, which a {fmt or '.ply'} file "
             "cannot record; viewers will draw its small Gaussians too strongly (a .spz keeps "
             "it)")
    if fmt == ".html":   # drawn in the box, as the viewer draws it (``PageView``)
        from fieldkit.export.web_page import PageView, splats_page

        return splats_page(out, params, page or PageView.of_subject(subject), subject.label), n
    params = splats_to_world(params, norm)
    if not folder:
        return write_splats(out, params, fmt, spz_sh_bits, antialiased), n
    if out.exists() and not out.is_dir():
        raise FieldkitError(f"--out {out} is a file; give a .ply file or a folder for the 3DGS "
                            "output layout")
    ply = out / "point_cloud" / f"iteration_{subject.steps}" / PLY_NAME
    ply.parent.mkdir(parents=True, exist_ok=True)
    write_splat_ply(ply, params)
    world = subject.cameras.to_world(norm)
    write_cameras_json(out / CAMERAS_JSON, world.c2w.double().numpy(),
                       world.K.double().numpy(), world.width.numpy(), world.height.numpy())
    cfg = subject.config
    write_cfg_args(out / CFG_ARGS, cfg.get("scene", ""), str(out), sh_degree_of(params),
                   int(cfg.get("downscale", 1)), cfg.get("train", {}).get("background") == "white")
    return ply, n
