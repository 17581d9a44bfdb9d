"""The model settings ``fieldkit train`` and ``fieldkit distill`` share on the command line.

A model is its preset's config with the flags the user set applied on top
(``--hashgrid.encoder.log2-table-size 19``, ``--triplane.encoder.resolutions 64 128 256``,
``--max-gaussians 200000``, ``--backend torch``); only the section of the kind being built
counts, and a flag left at its default changes nothing.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from fieldkit.errors import FieldkitError
from fieldkit.fields.models import HashGridModelConfig, MlpModelConfig, TriPlaneModelConfig
from fieldkit.splats.model import SplatConfig


def backend_overrides(config, backend: str) -> dict:
    """{"render": {"backend": b}, "encoder": {"backend": b}, ...} for every component of a
    model config that has a ``backend`` field."""
    out = {}
    for f in dataclasses.fields(config):
        sub = getattr(config, f.name)
        if dataclasses.is_dataclass(sub) and hasattr(sub, "backend"):
            out[f.name] = {"backend": backend}
    return out


@dataclass(kw_only=True)
class ModelOptions:
    """Preset and per-kind settings of the model a command builds (a base of its arguments)."""

    preset: Literal["default", "fast", "quality"] = "default"
    """Model preset: fast (smaller, coarser marching), default, or quality (larger, finer)."""
    backend: Literal["auto", "cuda", "torch"] | None = None
    """Every component's implementation at once: auto (the CUDA library where it runs, else
    the pure-torch twin with one warning), cuda (require nerfacc / gsplat / tiny-cuda-nn) or
    torch; per component: --hashgrid.render.backend, --hashgrid.encoder.backend,
    --splat.render.backend, ... (`fieldkit doctor` shows what runs)."""
    hashgrid: HashGridModelConfig = dataclasses.field(default_factory=HashGridModelConfig)
    """hashgrid settings; any you set here override the preset."""
    triplane: TriPlaneModelConfig = dataclasses.field(default_factory=TriPlaneModelConfig)
    """triplane settings; any you set here override the preset."""
    mlp: MlpModelConfig = dataclasses.field(default_factory=MlpModelConfig)
    """mlp settings; any you set here override the preset."""
    splat: SplatConfig = dataclasses.field(default_factory=SplatConfig)
    """splat settings; any you set here override the preset."""
    max_gaussians: int | None = None
    """splat: cap on the number of Gaussians (memory stays bounded)."""

    def base_config(self, kind: str):
        """The config a ``kind`` model starts from before the flags: its preset's (a command
        may start from its own, e.g. distillation students)."""
        from fieldkit.fields.registry import preset_config

        return preset_config(kind, self.preset)

    def model_config(self, kind: str):
        """The config of a ``kind`` model: ``base_config(kind)`` with the settings given for
        ``kind`` (and --max-gaussians, --backend) applied on top."""
        from fieldkit.fields.registry import merge

        config = merge(self.base_config(kind), self.given(kind))
        if self.max_gaussians is not None:
            if kind != "splat":
                raise FieldkitError(f"--max-gaussians is for splat models, not {kind}")
            if self.max_gaussians < 1:
                raise FieldkitError("--max-gaussians must be a positive number")
            config = merge(config, {"densify": {"max_gaussians": self.max_gaussians}})
        if self.backend is not None:
            config = merge(config, backend_overrides(config, self.backend))
        return config

    def given(self, kind: str) -> dict:
        """The nested settings the command line set in ``kind``'s section: those that differ
        from the section's default (a command may give a section its own default)."""
        from fieldkit.fields.registry import changed_fields

        default = next(f for f in dataclasses.fields(self) if f.name == kind).default_factory()
        return changed_fields(getattr(self, kind), default)

    def check_only_kind(self, kind: str) -> None:
        """Raise when settings were given for a kind other than the one being built (they
        would be silently ignored)."""
        for other in ("hashgrid", "triplane", "mlp", "splat"):
            if other != kind and self.given(other):
                raise FieldkitError(f"--{other}.* settings were given but the model is {kind}; "
                                    f"use --{kind}.* instead")
