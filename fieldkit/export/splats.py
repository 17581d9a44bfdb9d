"""`fieldkit export splats`: a splat run as a standard 3DGS .ply in the scene's world units."""
from __future__ import annotations

from pathlib import Path

from fieldkit.data.normalize import Normalisation
from fieldkit.errors import FieldkitError
from fieldkit.export.mesh import check_suffix
from fieldkit.splats.ply import write_splat_ply
from fieldkit.splats.transform import splats_to_world


def export_splats(run_dir: Path, out: Path) -> tuple[Path, int]:
    """Write the Gaussians of a splat run to ``out`` (.ply, INRIA 3DGS layout, world units).
    Returns (path, number of Gaussians)."""
    from fieldkit.train.run import load_model, read_config

    out = check_suffix(out, (".ply",))
    model = load_model(run_dir)
    if getattr(model, "kind", None) != "splat":
        raise FieldkitError(f"{run_dir} holds a {model.kind} model; `export splats` needs a splat "
                            f"run (train one with --model splat, or convert this one with "
                            f"`fieldkit distill {run_dir} --to splat`)")
    norm = Normalisation.from_dict(read_config(run_dir)["normalisation"])
    params = splats_to_world(model.export_params(), norm)
    return write_splat_ply(out, params), model.num_gaussians
