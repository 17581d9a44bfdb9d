"""Gaussians other trainers wrote: which file holds them, and which world they are in.

- a 3DGS .ply of any trainer (``fieldkit/splats/ply.py``), or one of the web viewers' files:
  SuperSplat's compressed .ply, a .spz, a .splat, a SOG (``compressed_ply.py``, ``spz.py``,
  ``splat_file.py``, ``sog.py``); inside the original 3DGS trainer's
  output folder it has a cameras.json and a cfg_args (``gs_folder.py``); world units;
- gsplat's simple_trainer results: ``ckpts/ckpt_*.pt`` or ``ply/point_cloud_*.ply`` beside a
  cfg.yml (``gsplat_folder.py``), in a normalised frame of its COLMAP dataset;
- a nerfstudio splatfacto run: ``nerfstudio_models/step-*.ckpt`` beside config.yml and
  dataparser_transforms.json (``nerfstudio_run.py``), in nerfstudio's dataparser frame.

``dataset_world`` brings the Gaussians back into their dataset's world when that dataset is
known (given as ``--scene``, or named by the folder and present here), so that its cameras and
photos can be used; the distillation (``fieldkit/distill/source.py``) and the viewer
(``fieldkit/viewer/sources.py``) both start from it.
"""
from __future__ import annotations

from pathlib import Path

import torch

from fieldkit.data.normalize import Normalisation
from fieldkit.errors import FieldkitError, warn

SPLAT_FILES = (".ply", ".spz", ".splat", ".ksplat", ".sog", ".pt", ".ckpt")
"""Files read as Gaussians: a 3DGS .ply (or SuperSplat's compressed .ply), a .spz, a .splat, a
GaussianSplats3D .ksplat, a SOG bundle, a gsplat checkpoint, a splatfacto checkpoint. (An
unbundled SOG is a folder.)"""


def read_splats(path: Path) -> dict[str, torch.Tensor]:
    """Splat params of a 3DGS or compressed .ply, a .spz, a .splat, a .ksplat, a SOG (.sog or the
    meta.json of a folder), a splatfacto checkpoint (.ckpt) or a gsplat checkpoint (.pt)."""
    from fieldkit.splats.gsplat_folder import read_gsplat_checkpoint
    from fieldkit.splats.ksplat import read_ksplat
    from fieldkit.splats.nerfstudio_run import read_splatfacto_checkpoint
    from fieldkit.splats.ply import read_splat_ply
    from fieldkit.splats.sog import META, read_sog
    from fieldkit.splats.splat_file import read_splat_file
    from fieldkit.splats.spz import read_spz

    path = Path(path)
    if path.name == META:
        return read_sog(path)
    readers = {".ply": read_splat_ply, ".spz": read_spz, ".splat": read_splat_file,
               ".ksplat": read_ksplat, ".sog": read_sog, ".ckpt": read_splatfacto_checkpoint}
    return readers.get(path.suffix.lower(), read_gsplat_checkpoint)(path)


def latest_in(folder: Path) -> Path | None:
    """The newest Gaussians of another trainer's folder (3DGS output, gsplat results, splatfacto
    run; an unbundled SOG's meta.json), or None when ``folder`` is none of them (a fieldkit run
    holds config.json)."""
    from fieldkit.splats.gs_folder import latest_ply
    from fieldkit.splats.sog import META, is_sog_folder
    from fieldkit.splats.gsplat_folder import latest_splats, result_folder_of
    from fieldkit.splats.nerfstudio_run import latest_checkpoint, run_folder_of

    folder = Path(folder)
    if not folder.is_dir() or (folder / "config.json").exists():
        return None
    if is_sog_folder(folder):
        return folder / META
    if run_folder_of(folder) is not None:
        found = latest_checkpoint(folder)
        if found is None:
            raise FieldkitError(f"{folder} is a nerfstudio run without checkpoints in "
                                "nerfstudio_models/; train it longer or pass its exported .ply")
        return found
    return latest_ply(folder) or (latest_splats(folder) if result_folder_of(folder) else None)


def dataset_world(path: Path, params: dict[str, torch.Tensor], scene: Path | None,
                  downscale: int, ply_transform: Path | None = None
                  ) -> tuple[dict[str, torch.Tensor], Path | None, int, Normalisation | None]:
    """(params, scene, downscale, frame) for Gaussians read from ``path``: in the world of
    their dataset where it is known, with that dataset (``scene`` if given, else the one their
    folder names when it is here) and its downscale. ``ply_transform``: a nerfstudio
    dataparser_transforms.json (in its run folder, that run's config.yml is read too), or
    ``gsplat`` for gsplat's normalised frame. ``frame``: for Gaussians nerfstudio trained, the
    similarity from the world they are returned in to nerfstudio's dataparser frame (where its
    viewer's camera_path.json files are; ``dataparser.nerfstudio_frame``), else None."""
    from fieldkit.splats.dataparser import nerfstudio_frame, to_dataset_world
    from fieldkit.splats.gsplat_folder import GSPLAT_FRAME, gsplat_world
    from fieldkit.splats.nerfstudio_run import TRANSFORMS, run_folder_of

    asked = ply_transform is not None and str(ply_transform) == GSPLAT_FRAME
    run, turned = run_folder_of(path), False
    if run is None and ply_transform is not None and not asked:   # the exported .ply's run
        run = run_folder_of(Path(ply_transform).resolve().parent)
    if run is not None and not asked:
        if ply_transform is None:
            ply_transform = run / TRANSFORMS
            if not ply_transform.is_file():
                raise FieldkitError(f"{run} has no {TRANSFORMS}; pass --ply-transform with "
                                    "the one of the run that made the checkpoint")
        scene, downscale, turned = _splatfacto_dataset(run, scene, downscale)
    params, scene, downscale = gsplat_world(path, params, scene, downscale, asked)
    frame = None
    if ply_transform is not None and not asked:   # (turned only here: a splatfacto run's)
        frame = nerfstudio_frame(ply_transform, turned)
        params = to_dataset_world(params, frame)
    return params, scene, downscale, frame


def _splatfacto_dataset(run: Path, scene: Path | None,
                        downscale: int) -> tuple[Path | None, int, bool]:
    """(scene, downscale, turned) of a splatfacto run: ``scene`` if given, else its config's
    dataset when here; ``turned`` when nerfstudio turned that scene's COLMAP world and fieldkit
    reads it as COLMAP (``nerfstudio_run.COLMAP_AXES``)."""
    from fieldkit.data.scene import detect_format
    from fieldkit.splats.gsplat_folder import read_config_yaml
    from fieldkit.splats.nerfstudio_run import (CONFIG, config_value, run_dataset,
                                                turns_colmap_world)

    cfg = read_config_yaml(run / CONFIG, "ns-train")
    if scene is not None:
        return scene, downscale, turns_colmap_world(cfg) and detect_format(Path(scene)) == "colmap"
    dataset = run_dataset(run, cfg)
    if dataset is None:
        data = config_value(cfg, "pipeline", "datamanager", "dataparser", "data")
        warn(f"the dataset of {run} ({data!r} in its {CONFIG}) is not here, so neither are its "
             "cameras and photos; the Gaussians stay in its world (`fieldkit distill` takes it "
             "with --scene)")
        return None, downscale, False
    turned = turns_colmap_world(cfg) and detect_format(dataset[0]) == "colmap"
    return dataset[0], dataset[1] if downscale == 1 else downscale, turned


def antialiased_of(path: Path) -> bool:
    """Whether the Gaussians of ``path`` were trained in gsplat's antialiased mode, and must be
    drawn so: a .spz whose header flags it, a file of a gsplat results folder whose cfg.yml has
    ``antialiased: true``, a splatfacto run whose config.yml has ``rasterize_mode:
    antialiased``. Other files say nothing of it (a 3DGS .ply, the other web files): False."""
    from fieldkit.splats.gsplat_folder import read_config_yaml, read_gsplat_cfg, result_folder_of
    from fieldkit.splats.nerfstudio_run import CONFIG, config_value, run_folder_of
    from fieldkit.splats.spz import spz_antialiased

    path = Path(path)
    if path.suffix.lower() == ".spz":
        return spz_antialiased(path)
    run = run_folder_of(path)
    if run is not None:
        cfg = read_config_yaml(run / CONFIG, "ns-train")
        return config_value(cfg, "pipeline", "model", "rasterize_mode") == "antialiased"
    folder = result_folder_of(path)
    if folder is not None:
        return bool(read_gsplat_cfg(folder).get("antialiased", False))
    return False
