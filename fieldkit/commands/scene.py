"""`fieldkit scene info|demo` and `fieldkit doctor`."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Union

import tyro

from fieldkit.commands.common import Positional


@dataclass
class SceneInfo:
    """Print a scene's format, images per split, resolution, cameras, normalisation, points."""

    scene: Positional[Path]
    """Scene folder."""
    json: bool = False
    """Print machine-readable JSON instead of text."""

    def run(self) -> None:
        from fieldkit.data.info import format_summary, scene_summary

        info = scene_summary(self.scene)
        print(json.dumps(info, indent=2) if self.json else format_summary(info))


@dataclass
class SceneDemo:
    """Generate the built-in synthetic demo scene (Blender format) into a folder."""

    out: Positional[Path]
    """Folder to write."""
    size: int = 96
    """Image width and height in pixels."""
    seed: int = 0
    """Random seed for the camera positions."""

    def run(self) -> None:
        from fieldkit.data.demo import generate_demo_scene

        print(f"wrote {generate_demo_scene(self.out, size=self.size, seed=self.seed)}")


@dataclass
class Doctor:
    """Report the compute devices and accelerated backends available here."""

    def run(self) -> None:
        from fieldkit.doctor import report

        print(report())


SceneCommands = Union[
    Annotated[SceneInfo, tyro.conf.subcommand("info", description=SceneInfo.__doc__)],
    Annotated[SceneDemo, tyro.conf.subcommand("demo", description=SceneDemo.__doc__)],
]

@dataclass
class SceneGroup:
    """Inspect a scene folder, or generate the built-in demo scene."""

    command: tyro.conf.OmitSubcommandPrefixes[SceneCommands]

    def run(self) -> None:
        self.command.run()
