"""Every representation registered by name, its presets, and config (de)serialisation.

``fieldkit train --model KIND --preset NAME`` builds ``MODELS[KIND]`` from its config class with
the preset's overrides; a run's config.json (or a model file's metadata) alone rebuilds it.
Presets are small override dicts on top of the config class's defaults, not copied blocks.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import torch

from fieldkit.errors import FieldkitError

MODELS: dict[str, type] = {}
"""kind -> model class (with ``kind``, ``config_class``, ``presets``, ``load``)."""


def register(cls: type) -> type:
    """Class decorator: make ``cls`` trainable and loadable as ``--model cls.kind``."""
    MODELS[cls.kind] = cls
    return cls


def _ensure_builtin() -> None:
    import fieldkit.fields.models  # noqa: F401  (registers hashgrid, triplane, mlp)
    import fieldkit.splats.model  # noqa: F401  (registers splat)


def model_class(kind: str) -> type:
    _ensure_builtin()
    if kind not in MODELS:
        raise FieldkitError(f"unknown model {kind!r}; choose one of {', '.join(sorted(MODELS))}")
    return MODELS[kind]


def config_from_dict(cls: type, d: dict):
    """Rebuild a (nested) dataclass config from ``dataclasses.asdict`` output, e.g. JSON."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise FieldkitError(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}; "
                            "the config was written by another fieldkit version")
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        value, hint = d[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = config_from_dict(hint, value)
        kwargs[f.name] = value
    return cls(**kwargs)


def merge(config, overrides: dict):
    """A copy of ``config`` with nested ``overrides`` ({"encoder": {"features": 8}}) applied."""
    changes = {}
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise FieldkitError(f"{type(config).__name__} has no field {key!r}")
        current = getattr(config, key)
        changes[key] = merge(current, value) if isinstance(value, dict) else value
    return dataclasses.replace(config, **changes)


def preset_config(kind: str, preset: str = "default"):
    """The config of ``kind`` with ``preset``'s overrides (``default``: the class defaults)."""
    cls = model_class(kind)
    if preset != "default" and preset not in cls.presets:
        raise FieldkitError(f"{kind} has no preset {preset!r}; choose one of "
                            f"{', '.join(['default', *cls.presets])}")
    return merge(cls.config_class(), cls.presets.get(preset, {}))


def build_model(kind: str, bound: float, preset: str = "default", config=None):
    """A fresh model of ``kind`` for a scene whose box half-size is ``bound``."""
    cls = model_class(kind)
    config = config if config is not None else preset_config(kind, preset)
    config = merge(config, {"render": {"bound": float(bound)}})
    if hasattr(config.render, "unbounded"):   # volumetric models: cone steps when unbounded
        from fieldkit.fields.nerf import unbounded_render
        config = dataclasses.replace(config, render=unbounded_render(config.render))
    return cls(config)


def model_from_config(kind: str, config: dict):
    """A fresh (untrained) model from a run's ``config.json["model"]["config"]``."""
    cls = model_class(kind)
    return cls(config_from_dict(cls.config_class, config))


def load_model_file(path: Path, device: str | torch.device = "cpu"):
    """Any registered model from its ``model.safetensors`` (kind and config in its metadata)."""
    from safetensors import safe_open

    from fieldkit.train.checkpoint import load_tensors

    from fieldkit.fields.compact import expand_state

    tensors = load_tensors(path, device=str(device))
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "kind" not in meta or "config" not in meta:
        raise FieldkitError(f"{path} has no fieldkit model metadata; pass a file written by "
                            "`fieldkit train`")
    tensors = expand_state(tensors, meta, path)
    config = _runtime_backends(json.loads(meta["config"]))
    model = model_from_config(meta["kind"], config).to(device)
    model.load_state_dict(tensors)
    return model


def _runtime_backends(config: dict) -> dict:
    """A saved config with every ``backend`` set back to ``auto``: which CUDA library runs is a
    property of the machine that loads the model, not of the one that trained it (a run trained
    with ``--backend cuda`` still renders on a laptop)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            value = _runtime_backends(value)
        elif key == "backend":
            value = "auto"
        out[key] = value
    return out


MODEL_FILE = "model.safetensors"


def save_model(model, directory: Path, weights: str = "float32") -> Path:
    """Write ``directory/model.safetensors``: the state dict (occupancy grids compacted:
    ``fieldkit/fields/compact.py``), with the kind and the config as metadata, so that the
    file alone rebuilds the model. ``weights``: float32, or float16 (``TrainConfig.weights``)."""
    from fieldkit.fields.compact import compact_state
    from fieldkit.train.checkpoint import save_tensors

    path = Path(directory) / MODEL_FILE
    tensors, layout = compact_state(model, weights)
    save_tensors(path, tensors, metadata={
        "kind": model.kind, "config": json.dumps(dataclasses.asdict(model.config)), **layout})
    return path


def load_model_dir(cls: type, directory: Path, device: str | torch.device = "cpu"):
    """The model in ``directory/model.safetensors`` (no pickling); it must be a ``cls.kind``
    model when ``cls`` names a kind."""
    model = load_model_file(Path(directory) / MODEL_FILE, device)
    if getattr(cls, "kind", "") and model.kind != cls.kind:
        raise TypeError(f"{directory} holds a {model.kind} model, not {cls.kind}")
    return model


def changed_fields(config, default) -> dict:
    """The nested override dict that turns ``default`` into ``config`` (only what differs)."""
    out = {}
    for f in dataclasses.fields(config):
        a, b = getattr(config, f.name), getattr(default, f.name)
        if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
            sub = changed_fields(a, b)
            if sub:
                out[f.name] = sub
        elif a != b:
            out[f.name] = a
    return out
