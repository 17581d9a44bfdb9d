"""gsplat's simple_trainer results folder: the Gaussians it trained, and the frame they are in.

gsplat's example trainer (``examples/simple_trainer.py``) writes::

    RESULT/cfg.yml                          its Config (``yaml.dump``), the dataset among it
    RESULT/ckpts/ckpt_{step}_rank{r}.pt     {"step", "splats": {means, scales, quats,
                                            opacities, sh0, shN}}, one file a GPU rank
    RESULT/ply/point_cloud_{step}.ply       the same Gaussians as a 3DGS .ply (--save_ply)

The splats use the 3DGS conventions (log scales, opacity logits, w-first quaternions, sh0
[N, 1, 3], shN [N, K-1, 3]), so a checkpoint reads into the same params as a .ply. It is read
with ``torch.load(weights_only=True)``: tensors only, no code.

**Its frame.** With ``normalize_world_space`` (the default) the trainer does not keep the
COLMAP world. It turns, centres and scales it with a similarity ``T`` computed from the
dataset and saves ``T`` nowhere:

1. the cameras' mean up direction is turned onto the camera-space up (-y); the centre is the
   median of the points nearest the origin on the cameras' optical axes; the scale makes the
   median camera distance from it 1;
2. the sparse points then set the axes: centred on their median, rotated onto their principal
   axes (largest variance first, proper rotation);
3. newer versions turn the result half a turn about x when the points' median height is above
   their mean ("upside down").

``gsplat_frame`` recomputes ``T`` from the dataset here. Step 2's eigenvector signs depend on
the linear-algebra library, and step 3 on the version, so ``T`` is known up to a proper
diagonal sign matrix: of the four, the one that lays the dataset's sparse points on the
Gaussians (they start from those points) is taken. ``from_gsplat_frame`` brings the Gaussians
back into the dataset's world, whose cameras and photos then give the distillation its views
and its report (``fieldkit/distill/source.py``).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from fieldkit.errors import FieldkitError, warn

GSPLAT_CFG = "cfg.yml"
GSPLAT_FRAME = "gsplat"
"""The ``--ply-transform`` word for gsplat's normalised frame (recomputed from ``--scene``)."""
SIGNS = (np.diag([1.0, 1.0, 1.0]), np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]),
         np.diag([-1.0, -1.0, 1.0]))
"""The proper sign matrices ``T`` is known up to."""
FIT_POINTS = 4000
"""Sparse points (at most) that score a candidate frame."""
FIT_GAUSSIANS = 60000
"""Opaque Gaussians (at most) they are matched to."""
GOOD_FIT = 0.05
"""A frame whose median point-to-Gaussian distance exceeds this (in gsplat's units: the median
camera distance is 1) draws a warning: the Gaussians do not lie on that dataset's points."""
DISTINCT = 1.5
"""The best frame's fit is this many times closer than the next one's, or a warning says the
scene is too symmetric to tell (on beer-colmap: 0.0122 against 0.0294)."""
_CKPT = re.compile(r"^ckpt_(\d+)_rank(\d+)\.pt$")
_PLY = re.compile(r"^point_cloud_(\d+)\.ply$")
_SPLAT_KEYS = ("means", "scales", "quats", "opacities", "sh0")


# ---------------------------------------------------------------------------- the folder
def result_folder_of(path: Path) -> Path | None:
    """The gsplat results folder ``path`` is (a folder with cfg.yml) or lies in (a
    checkpoint in its ckpts/, a .ply in its ply/); None otherwise."""
    path = Path(path).resolve()
    if not path.is_dir() and path.parent.name not in ("ckpts", "ply"):
        return None
    folder = path if path.is_dir() else path.parent.parent
    return folder if (folder / GSPLAT_CFG).is_file() else None


def latest_splats(folder: Path) -> Path | None:
    """The newest Gaussians of a gsplat results folder: its checkpoint of the largest step
    (rank 0 names them all), or its .ply when that is newer or the only one; None if neither."""
    found = []
    for sub, pattern, rank_first in (("ckpts", _CKPT, 1), ("ply", _PLY, 0)):
        d = Path(folder) / sub
        if d.is_dir():
            for f in d.iterdir():
                m = pattern.match(f.name)
                if m and (sub == "ply" or int(m.group(2)) == 0):
                    found.append((int(m.group(1)), rank_first, f))
    return max(found)[2] if found else None


def _load(path: Path) -> dict:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FieldkitError(f"{path} does not exist; pass a gsplat checkpoint (ckpts/ckpt_*.pt)")\
            from None
    except Exception as e:  # noqa: BLE001 - a pickle that is not tensors only, or no pickle
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FieldkitError(f"{path} is not a gsplat checkpoint that loads as tensors only "
                            f"({first[:160]}); pass the .ply its trainer wrote instead") from None
    if not isinstance(data, dict) or not isinstance(data.get("splats"), dict):
        raise FieldkitError(f"{path} has no 'splats' entry; pass a checkpoint of gsplat's "
                            "simple_trainer (ckpts/ckpt_*.pt) or its .ply")
    return data["splats"]


def read_gsplat_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Splat params (as ``read_splat_ply`` returns them) of a gsplat checkpoint: every rank's
    file of that step, concatenated."""
    path = Path(path)
    m = _CKPT.match(path.name)
    files = [path]
    if m:
        ranks = [(int(r.group(2)), f) for f in path.parent.glob(f"ckpt_{m.group(1)}_rank*.pt")
                 if (r := _CKPT.match(f.name))]
        files = [f for _, f in sorted(ranks)] or [path]
    parts = [_load(f) for f in files]
    for f, splats in zip(files, parts):
        if "sh0" not in splats and "features" in splats:
            raise FieldkitError(f"{f} colours its Gaussians with gsplat's appearance module "
                                "(--app_opt); pass the .ply its trainer wrote with --save_ply "
                                "(its colours are baked)")
        missing = [k for k in _SPLAT_KEYS if not isinstance(splats.get(k), torch.Tensor)]
        if missing:
            raise FieldkitError(f"{f}'s splats lack {', '.join(missing)}; pass a checkpoint of "
                                "gsplat's simple_trainer or its .ply")
    n = [len(s["means"]) for s in parts]
    params = {}
    for k in _SPLAT_KEYS + ("shN",):
        if k == "shN" and not all(isinstance(s.get("shN"), torch.Tensor) for s in parts):
            params[k] = torch.zeros(sum(n), 0, 3)
            continue
        params[k] = torch.cat([s[k].detach().float() for s in parts])
    shapes = {"means": (3,), "scales": (3,), "quats": (4,), "opacities": (), "sh0": (1, 3)}
    total = sum(n)
    for k, tail in shapes.items():
        if tuple(params[k].shape) == (total, 1) and tail == ():
            params[k] = params[k][:, 0]
        if tuple(params[k].shape) != (total, *tail):
            raise FieldkitError(f"{path}: splats[{k!r}] has shape {tuple(params[k].shape)}, "
                                f"expected {(total, *tail)}; pass the .ply its trainer wrote")
    if params["shN"].dim() != 3 or params["shN"].shape[0] != total or params["shN"].shape[2] != 3:
        raise FieldkitError(f"{path}: splats['shN'] has shape {tuple(params['shN'].shape)}, "
                            f"expected ({total}, K-1, 3)")
    return params


CLASS_KEY = "__class__"
"""The key under which a ``!!python/object:NAME`` mapping keeps NAME."""


class _CfgLoader:
    """A yaml SafeLoader that reads Python-tagged nodes (``!!python/object:...``, tuples,
    paths) as plain mappings (with the class name under CLASS_KEY), lists and strings,
    building nothing."""

    @staticmethod
    def make():
        import yaml

        class Loader(yaml.SafeLoader):
            pass

        def plain(loader, suffix, node):
            if isinstance(node, yaml.MappingNode):   # an object: its fields, and its class
                fields = loader.construct_mapping(node, deep=True)
                if suffix.startswith("object:"):
                    fields.setdefault(CLASS_KEY, suffix.split(":", 1)[1])
                return fields
            if isinstance(node, yaml.SequenceNode):
                items = loader.construct_sequence(node, deep=True)
                if suffix.endswith("Path") and all(isinstance(i, str) for i in items):
                    return str(Path(*items)) if items else ""
                return items
            return loader.construct_scalar(node)

        Loader.add_multi_constructor("tag:yaml.org,2002:python/", plain)
        return Loader


def read_config_yaml(path: Path, writer: str = "gsplat's trainer") -> dict:
    """A trainer's yaml-dumped config (gsplat's cfg.yml, nerfstudio's config.yml) as plain
    values, building no Python object; one-line errors that name ``writer``."""
    import yaml

    path = Path(path)
    try:
        cfg = yaml.load(path.read_text(), Loader=_CfgLoader.make())  # noqa: S506 - safe subclass
    except FileNotFoundError:
        raise FieldkitError(f"{path} does not exist; pass the folder {writer} wrote") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FieldkitError(f"{path} is not readable YAML ({first}); pass the {path.name} "
                            f"{writer} wrote") from None
    if not isinstance(cfg, dict):
        raise FieldkitError(f"{path} holds no settings; pass the {path.name} {writer} wrote")
    return cfg


def read_gsplat_cfg(folder: Path) -> dict:
    """The cfg.yml of a gsplat results folder as plain values; one-line errors."""
    return read_config_yaml(Path(folder) / GSPLAT_CFG)


def is_normalised(cfg: dict) -> bool:
    """Whether the trainer of ``cfg`` worked in its normalised frame (its default)."""
    return bool(cfg.get("normalize_world_space", True))


def gsplat_dataset(folder: Path, cfg: dict) -> tuple[Path, int] | None:
    """(scene folder, downscale) a gsplat results folder was trained on, when its data_dir is
    on this machine and fieldkit reads it: as given, or relative to where the trainer ran
    (the folder less its result_dir); else None. The downscale is its data_factor."""
    from fieldkit.data.scene import detect_format
    from fieldkit.errors import SceneError

    data_dir, result_dir = cfg.get("data_dir"), cfg.get("result_dir")
    if not isinstance(data_dir, str) or not data_dir:
        return None
    candidates = [Path(data_dir)]
    folder = Path(folder).resolve()
    if isinstance(result_dir, str) and result_dir and not Path(data_dir).is_absolute():
        parts = Path(result_dir).parts
        if tuple(folder.parts[-len(parts):]) == parts:  # run from folder minus result_dir
            candidates.insert(0, Path(*folder.parts[:-len(parts)]) / data_dir)
    factor = cfg.get("data_factor", 1)
    for c in candidates:
        if c.is_dir():
            try:
                detect_format(c)
            except SceneError:
                continue
            return c, factor if isinstance(factor, int) and factor >= 1 else 1
    return None


# ---------------------------------------------------------------------------- the frame
def _turn_onto(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[3, 3] the smallest rotation taking unit vector ``a`` onto unit vector ``b`` (half a
    turn about x when they are opposite)."""
    axis = np.cross(a, b)
    c = float(a @ b)
    if c <= -1 + 1e-12:
        return np.diag([1.0, -1.0, -1.0])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + k + k @ k / (1 + c)


def camera_similarity(c2w: np.ndarray) -> np.ndarray:
    """[4, 4] step 1 of gsplat's normalisation from cameras ``c2w`` [N, 4, 4] (OpenCV axes):
    up onto -y, centred on the median focus, median camera distance 1."""
    R, t = c2w[:, :3, :3], c2w[:, :3, 3]
    up = (-R[:, :, 1]).mean(0)
    turn = _turn_onto(up / np.linalg.norm(up), np.array([0.0, -1.0, 0.0]))
    fwd = (turn @ R)[:, :, 2]
    t = t @ turn.T
    focus = t - (fwd * t).sum(-1, keepdims=True) * fwd   # nearest the origin on each axis
    shift = -np.median(focus, axis=0)
    scale = 1.0 / np.median(np.linalg.norm(t + shift, axis=-1))
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = scale * turn, scale * shift
    return m


def principal_axes(points: np.ndarray) -> np.ndarray:
    """[4, 4] step 2: the rigid motion taking ``points`` [P, 3] (centred on their median) onto
    their principal axes, largest variance first, as a proper rotation."""
    centre = np.median(points, axis=0)
    values, vectors = np.linalg.eigh(np.cov(points - centre, rowvar=False))
    vectors = vectors[:, np.argsort(values)[::-1]]
    if np.linalg.det(vectors) < 0:
        vectors[:, 0] *= -1
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = vectors.T, -vectors.T @ centre
    return m


def frame_candidates(c2w: np.ndarray, points: np.ndarray) -> list[np.ndarray]:
    """The four [4, 4] world -> gsplat similarities ``T`` may be (``SIGNS``)."""
    t1 = camera_similarity(c2w)
    t2 = principal_axes(points @ t1[:3, :3].T + t1[:3, 3])
    t = t2 @ t1
    out = []
    for s in SIGNS:
        d = np.eye(4)
        d[:3, :3] = s
        out.append(d @ t)
    return out


def _fit(points: np.ndarray, centres: torch.Tensor) -> float:
    """Median distance from ``points`` [P, 3] to their nearest of ``centres`` [M, 3]."""
    p = torch.from_numpy(points)
    best = torch.cat([torch.cdist(chunk, centres).min(1).values for chunk in p.split(256)])
    return float(best.median())


def gsplat_frame(params: dict[str, torch.Tensor], scene: Path) -> tuple[np.ndarray, float]:
    """(world -> gsplat [4, 4], fit) for Gaussians ``params`` in gsplat's normalised frame of
    the COLMAP scene ``scene``: the candidate that lays its sparse points closest to the opaque
    Gaussians; ``fit`` is that median distance (gsplat units)."""
    from fieldkit.data.scene import read_raw
    from fieldkit.splats.frame import opaque_centres

    raw = read_raw(Path(scene))
    if raw.points is None or len(raw.points) < 4:
        raise FieldkitError(f"{scene} has no sparse points; gsplat's normalised frame is "
                            "computed from a COLMAP model's points3D, so pass the COLMAP "
                            "dataset the splats were trained on")
    gen = torch.Generator().manual_seed(0)
    points = raw.points[torch.randperm(len(raw.points), generator=gen)[:FIT_POINTS].numpy()]
    centres = opaque_centres(params["means"], params["opacities"])
    centres = centres[torch.randperm(len(centres), generator=gen)[:FIT_GAUSSIANS]]
    scored = sorted(((_fit(points @ t[:3, :3].T + t[:3, 3], centres), i, t)
                     for i, t in enumerate(frame_candidates(raw.c2w, raw.points))),
                    key=lambda x: x[:2])
    (fit, _, frame), second = scored[0], scored[1][0]
    if second < DISTINCT * fit:
        warn(f"gsplat's frame is ambiguous for {scene}: its sparse points lie about as close to "
             f"the Gaussians turned half a turn ({second:.3f} against {fit:.3f}); if the views "
             "look wrong, write the right one as a dataparser_transforms.json and pass it with "
             "--ply-transform")
    return frame, fit


def from_gsplat_frame(params: dict[str, torch.Tensor], frame: np.ndarray) -> dict:
    """Splat params in gsplat's frame -> the dataset's world, by the inverse of ``frame``
    (world -> gsplat, ``s R p + t``)."""
    from fieldkit.splats.transform import transform_splats

    s = float(np.cbrt(np.linalg.det(frame[:3, :3])))
    R = frame[:3, :3] / s
    return transform_splats(params, torch.from_numpy(R.T.copy()), 1.0 / s,
                            torch.from_numpy(-R.T @ frame[:3, 3] / s))


def gsplat_world(path: Path, params: dict[str, torch.Tensor], scene: Path | None,
                 downscale: int, asked: bool = False
                 ) -> tuple[dict[str, torch.Tensor], Path | None, int]:
    """(params, scene, downscale) of Gaussians from gsplat's simple_trainer: in its dataset's
    world when it normalised that world (its cfg.yml says so, or ``asked``: ``--ply-transform
    gsplat``) and the dataset is here (its cfg.yml's, or ``scene``); else as they are. The
    scene and downscale are its cfg.yml's unless given."""
    folder = result_folder_of(path)
    if folder is None and not asked:
        return params, scene, downscale
    normalised = asked
    if folder is not None:
        cfg = read_gsplat_cfg(folder)
        normalised = normalised or is_normalised(cfg)
        dataset = gsplat_dataset(folder, cfg) if scene is None else None
        if dataset is not None:
            scene = dataset[0]
            downscale = dataset[1] if downscale == 1 else downscale
        elif scene is None:
            warn(f"the dataset of {folder} ({cfg.get('data_dir')!r} in its cfg.yml) is not "
                 "here, so neither are its cameras and photos; the Gaussians stay in gsplat's "
                 "frame (`fieldkit distill` takes that COLMAP dataset with --scene)")
    if not normalised or scene is None:
        if asked:
            raise FieldkitError("--ply-transform gsplat recomputes gsplat's frame from the "
                                "dataset; pass it with --scene")
        return params, scene, downscale
    frame, fit = gsplat_frame(params, scene)
    if fit > GOOD_FIT:
        warn(f"the Gaussians of {path.name} lie {fit:.3f} (median, gsplat units) from the "
             f"sparse points of {scene} in gsplat's frame; were they trained on that dataset?")
    return from_gsplat_frame(params, frame), scene, downscale


def write_gsplat_result(folder: Path, params: dict[str, torch.Tensor], step: int,
                        data_dir: str, data_factor: int = 1, normalize: bool = True,
                        antialiased: bool = False) -> Path:
    """A gsplat results folder holding ``params`` (already in the frame its cfg.yml implies)
    as the checkpoint of ``step``; returns the checkpoint. The inverse of the readers above,
    for tests and benchmarks."""
    import yaml

    folder = Path(folder)
    (folder / "ckpts").mkdir(parents=True, exist_ok=True)
    cfg = {"data_dir": str(data_dir), "data_factor": int(data_factor),
           "normalize_world_space": bool(normalize), "result_dir": str(folder),
           "test_every": 8, "sh_degree": int(round(np.sqrt(params["shN"].shape[1] + 1))) - 1,
           "antialiased": bool(antialiased)}
    (folder / GSPLAT_CFG).write_text(yaml.safe_dump(cfg))
    path = folder / "ckpts" / f"ckpt_{step}_rank0.pt"
    torch.save({"step": step, "splats": {k: v.detach().clone() for k, v in params.items()}},
               path)
    return path
