"""Crash-safe checkpoints without pickle.

A run is a directory. Its checkpoint is ``run_dir/checkpoint/``::

    model.safetensors      model state dict (keys verbatim)
    optimizer.safetensors  tensors of ``optimizer.state_dict()``, keys ``state.{param_id}.{name}``
                           (and ``param_groups.{i}.{name}`` for the rare tensor hyper-parameter)
    state.safetensors      ``extra.{name}`` for the caller's extra tensors and ``rng.torch_cpu``
                           (torch's default CPU generator state, uint8)
    state.json             step, the caller's extra JSON, the optimizer's non-tensor part
                           (param_groups, scalar step counts) and the file format version

Every file is written atomically (temp file in the same directory, fsync, ``os.replace``). A
checkpoint is assembled in a fresh ``checkpoint.tmp-XXXX`` directory and swapped in by renaming
the old one to ``checkpoint.old``, the new one to ``checkpoint`` and removing the old one, so a
crash at any moment leaves a loadable checkpoint: ``load_checkpoint`` falls back to
``checkpoint.old`` when ``checkpoint`` is missing. Loading never unpickles anything.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save
from torch import Tensor

from fieldkit.errors import FieldkitError

CHECKPOINT_DIR = "checkpoint"
OLD_SUFFIX = ".old"
TMP_PREFIX = "checkpoint.tmp-"
FORMAT = "fieldkit-checkpoint"
VERSION = 1

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_TENSORS_FILE = "state.safetensors"
STATE_JSON_FILE = "state.json"
RNG_KEY = "rng.torch_cpu"
EXTRA_PREFIX = "extra."

# JSON markers for values JSON cannot hold natively.
_TENSOR, _TUPLE, _INT_KEYS = "__tensor__", "__tuple__", "__int_keys__"


# ---------------------------------------------------------------------- atomic file writes
def _fsync_dir(path: Path) -> None:
    """Persist a directory entry (renames, new files); a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the new one:
    temp file in the same directory, fsync, ``os.replace``, fsync the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as JSON (indent 2, trailing newline)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


# ---------------------------------------------------------------------- safetensors files
def _prepare(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Detached, contiguous CPU tensors; tensors sharing storage are cloned (safetensors
    refuses shared memory, e.g. tied weights)."""
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for key, t in tensors.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"save_tensors: value for {key!r} is {type(t).__name__}, not a Tensor")
        t = t.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else 0
        if ptr and ptr in seen:
            t = t.clone()
        elif ptr:
            seen.add(ptr)
        out[key] = t
    return out


def save_tensors(path: Path, tensors: dict[str, Tensor],
                 metadata: dict[str, str] | None = None) -> None:
    """Atomically write ``tensors`` (any shapes/dtypes; moved to CPU, made contiguous) and
    optional string ``metadata`` as a safetensors file."""
    if metadata is not None:
        metadata = {str(k): str(v) for k, v in metadata.items()}
    atomic_write_bytes(Path(path), _st_save(_prepare(tensors), metadata=metadata))


def _bad_file(path: Path, err: Exception) -> FieldkitError:
    reason = " ".join(str(err).split()) or type(err).__name__
    return FieldkitError(f"{path} is not a valid safetensors file ({reason}); delete it or retrain")


def load_tensors(path: Path, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Read a safetensors file into ``{name: tensor}`` on ``device``. A missing or corrupt
    file raises ``FieldkitError`` with one line naming it."""
    path = Path(path)
    if not path.is_file():
        raise FieldkitError(f"{path} is missing; delete the incomplete run folder or retrain")
    try:
        tensors = _st_load(path.read_bytes())
    except Exception as err:  # SafetensorError, ValueError, OSError, ...
        raise _bad_file(path, err) from None
    return {k: v.to(device) for k, v in tensors.items()}


def read_metadata(path: Path) -> dict[str, str]:
    """The string metadata stored in a safetensors file's header ({} when none)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as err:
        raise _bad_file(path, err) from None


# ---------------------------------------------------------------------- RNG
def rng_state() -> Tensor:
    """[S] uint8 state of torch's default CPU generator."""
    return torch.get_rng_state().clone()


def set_rng_state(state: Tensor) -> None:
    """Restore torch's default CPU generator from ``rng_state()``'s output."""
    torch.set_rng_state(state.detach().to("cpu", torch.uint8).contiguous())


# ---------------------------------------------------------------------- nested state <-> JSON
def _encode(obj: Any, prefix: str, tensors: dict[str, Tensor]) -> Any:
    """JSON skeleton of a nested structure; tensors go to ``tensors`` under dotted keys."""
    if isinstance(obj, Tensor):
        tensors[prefix] = obj
        return {_TENSOR: prefix}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
        if all(isinstance(k, int) and not isinstance(k, bool) for k in obj):
            return {_INT_KEYS: {str(k): _encode(v, f"{prefix}.{k}", tensors)
                                for k, v in obj.items()}}
        raise TypeError(f"checkpoint: dict at {prefix!r} mixes key types")
    if isinstance(obj, tuple):
        return {_TUPLE: [_encode(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint: cannot store {type(obj).__name__} at {prefix!r}")


def _decode(obj: Any, tensors: dict[str, Tensor], where: Path) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {_TENSOR}:
            if obj[_TENSOR] not in tensors:
                raise FieldkitError(f"{where} names tensor {obj[_TENSOR]!r} that its "
                                    "safetensors file lacks; delete the checkpoint or retrain")
            return tensors[obj[_TENSOR]]
        if set(obj) == {_TUPLE}:
            return tuple(_decode(v, tensors, where) for v in obj[_TUPLE])
        if set(obj) == {_INT_KEYS}:
            return {int(k): _decode(v, tensors, where) for k, v in obj[_INT_KEYS].items()}
        return {k: _decode(v, tensors, where) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, tensors, where) for v in obj]
    return obj


# ---------------------------------------------------------------------- checkpoints
def checkpoint_path(run_dir: Path) -> Path | None:
    """The checkpoint directory to load: ``checkpoint``, else ``checkpoint.old`` (left by a
    crash mid-swap), else None."""
    run_dir = Path(run_dir)
    for name in (CHECKPOINT_DIR, CHECKPOINT_DIR + OLD_SUFFIX):
        if (run_dir / name).is_dir():
            return run_dir / name
    return None


def save_checkpoint(run_dir: Path, step: int, model_state: dict[str, Tensor],
                    optimizer_state: dict, extra_tensors: dict[str, Tensor] | None = None,
                    extra_json: dict | None = None) -> None:
    """Write ``run_dir/checkpoint/`` atomically (see the module docstring).

    ``model_state``: ``module.state_dict()``; ``optimizer_state``: ``optimizer.state_dict()``;
    ``extra_tensors``: any named tensors (e.g. occupancy grids, normalisation); ``extra_json``:
    JSON-serialisable dict (config, metrics). The CPU RNG state is saved too.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(TMP_PREFIX + "*"):  # left by an earlier crash
        shutil.rmtree(stale, ignore_errors=True)
    opt_tensors: dict[str, Tensor] = {}
    opt_json = {
        "state": _encode(optimizer_state.get("state", {}), "state", opt_tensors),
        "param_groups": _encode(optimizer_state.get("param_groups", []), "param_groups",
                                opt_tensors),
    }
    state_tensors = {EXTRA_PREFIX + k: v for k, v in (extra_tensors or {}).items()}
    state_tensors[RNG_KEY] = rng_state()
    meta = {"format": FORMAT, "version": str(VERSION), "step": str(int(step))}
    state = {"format": FORMAT, "version": VERSION, "step": int(step),
             "extra": extra_json or {}, "optimizer": opt_json}

    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=run_dir))
    try:
        save_tensors(tmp / MODEL_FILE, model_state, meta)
        save_tensors(tmp / OPTIMIZER_FILE, opt_tensors, meta)
        save_tensors(tmp / STATE_TENSORS_FILE, state_tensors, meta)
        atomic_write_json(tmp / STATE_JSON_FILE, state)
        os.chmod(tmp, 0o755)
        _fsync_dir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    current, old = run_dir / CHECKPOINT_DIR, run_dir / (CHECKPOINT_DIR + OLD_SUFFIX)
    if current.is_dir():
        if old.exists():  # ``current`` is complete, so an older leftover can go
            shutil.rmtree(old)
        os.replace(current, old)
    # Crash here: only checkpoint.old exists -> load falls back to it.
    os.replace(tmp, current)
    _fsync_dir(run_dir)
    if old.exists():
        shutil.rmtree(old)
        _fsync_dir(run_dir)


def load_checkpoint(run_dir: Path, device: str | torch.device = "cpu", restore_rng: bool = True
                    ) -> tuple[int, dict[str, Tensor], dict, dict[str, Tensor], dict]:
    """Read the checkpoint of ``run_dir``.

    Returns ``(step, model_state, optimizer_state, extra_tensors, extra_json)``, where
    ``optimizer_state`` is ready for ``optimizer.load_state_dict``. Tensors land on ``device``
    (optimizer tensors are moved to their parameters' device by ``load_state_dict``). With
    ``restore_rng`` the CPU generator is reset to its state at save time. Problems raise a
    one-line ``FieldkitError``.
    """
    ckpt = checkpoint_path(run_dir)
    if ckpt is None:
        raise FieldkitError(f"no checkpoint in {run_dir} (expected {Path(run_dir) / CHECKPOINT_DIR}"
                            "); train this run first")
    json_path = ckpt / STATE_JSON_FILE
    try:
        state = json.loads(json_path.read_text(encoding="utf-8"))
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError("not a fieldkit checkpoint state")
        step, opt_json = int(state["step"]), state["optimizer"]
    except FileNotFoundError:
        raise FieldkitError(f"{json_path} is missing; delete the checkpoint or retrain") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        reason = " ".join(str(err).split())
        raise FieldkitError(f"{json_path} is corrupt ({reason}); delete the checkpoint or "
                            "retrain") from None
    if int(state.get("version", 0)) > VERSION:
        raise FieldkitError(f"{json_path} has checkpoint version {state['version']}, newer than "
                            f"this fieldkit understands ({VERSION}); upgrade fieldkit")

    model_state = load_tensors(ckpt / MODEL_FILE, device)
    opt_tensors = load_tensors(ckpt / OPTIMIZER_FILE, device)
    state_tensors = load_tensors(ckpt / STATE_TENSORS_FILE, "cpu")
    optimizer_state = {
        "state": _decode(opt_json.get("state", {}), opt_tensors, json_path),
        "param_groups": _decode(opt_json.get("param_groups", []), opt_tensors, json_path),
    }
    extra_tensors = {k[len(EXTRA_PREFIX):]: v.to(device) for k, v in state_tensors.items()
                     if k.startswith(EXTRA_PREFIX)}
    if restore_rng and RNG_KEY in state_tensors:
        set_rng_state(state_tensors[RNG_KEY])
    return step, model_state, optimizer_state, extra_tensors, state.get("extra", {})
