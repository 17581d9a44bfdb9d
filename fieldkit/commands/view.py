"""`fieldkit view`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fieldkit.commands.common import Crop, Positional


@dataclass
class View:
    """Open the browser viewer on a run or a splat file (optionally beside a second run)."""

    target: Positional[Path]
    """Run directory, splat file (3DGS .ply, .compressed.ply, .spz, .splat, .ksplat, .sog, or a
    SOG folder), 3DGS output folder (its latest .ply, and its cameras.json for the first view and the frustums), or gsplat's results folder or
    checkpoint, or a splatfacto run folder or checkpoint (in its dataset's world, with its
    cameras, when that dataset is here)."""
    other: Positional[Path | None] = None
    """Optional second run to compare side by side."""
    scene: Path | None = None
    """A splat file's dataset, in whose world units it is: its training cameras and photos
    go on the frustums (as `fieldkit distill --scene`)."""
    downscale: int = 1
    """Image downscale of --scene's photos."""
    ply_transform: Path | None = None
    """A splat file's frame, as for `fieldkit distill`: nerfstudio's dataparser_transforms.json
    or `gsplat`."""
    host: str = "127.0.0.1"
    """Interface to bind; keep 127.0.0.1 unless others must reach it."""
    port: int = 8080
    """Port to serve on."""
    token: str | None = None
    """Access token required by the browser (recommended with a non-local host)."""
    crop: Crop = None
    """Start with the crop box X0 Y0 Z0 X1 Y1 Z1 on (box coordinates; the Render panel's Crop
    box folder changes it)."""

    def run(self) -> None:
        from fieldkit.render.crop import CropBox
        from fieldkit.viewer import require_viser

        require_viser()
        from fieldkit.viewer.config import ViewerConfig
        from fieldkit.viewer.server import serve

        CropBox.from_flat(self.crop)   # a one-line error before the server starts
        try:
            serve(self.target, self.other, ViewerConfig(host=self.host, port=self.port,
                                                        token=self.token, crop=self.crop),
                  scene=self.scene, downscale=self.downscale, ply_transform=self.ply_transform)
        except KeyboardInterrupt:
            pass
