"""ViewerConfig: everything about the viewer a user or a test may want to set."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ViewerConfig:
    """How the viewer serves, renders and shares time with training."""

    host: str = "127.0.0.1"
    """Interface to bind. 127.0.0.1 keeps the viewer private to this machine; anything else
    (e.g. 0.0.0.0) opens it to the network, where a token is recommended."""
    port: int = 8080
    """Port to serve on (0: any free port). When taken, viser tries the next ones."""
    token: str | None = None
    """Access token. When set, the page and its websocket are refused (HTTP 401) unless the
    URL carries ``?token=TOKEN`` once; the browser then keeps it in a cookie."""
    max_resolution: int = 512
    """Long side in pixels of the refined image rendered once the camera stops."""
    preview_resolution: int = 128
    """Long side in pixels of the fast image rendered while the camera moves."""
    preview_step_scale: float = 4.0
    """NeRF previews march with steps this many times longer than the model's own (4: a
    quarter of the samples); refined frames use the model's steps."""
    train_resolution: int = 256
    """Long side of refined images while training runs (full ``max_resolution`` when paused
    or done), so refreshes fit in the render budget."""
    settle_seconds: float = 0.25
    """The camera counts as stopped once it has not moved for this long; then the refined
    image is rendered."""
    render_fraction: float = 0.15
    """While training: viewer rendering per second of training (token bucket filled by each
    step; rendering happens between steps), so training slows by about this fraction."""
    live_refresh_seconds: float = 2.0
    """While training: re-render a still view at most this often to show the model's
    progress."""
    splat_refresh_seconds: float = 5.0
    """While training splats shown in the browser: re-send the Gaussians this often."""
    crop: tuple[float, float, float, float, float, float] | None = None
    """The crop box every browser starts with (X0 Y0 Z0 X1 Y1 Z1, box coordinates), or None:
    off, spanning the model's box."""
    stats_seconds: float = 1.0
    """While training: refresh the step, loss, PSNR, rays/s and ETA panel this often."""
    image_format: str = "jpeg"
    """Transport of rendered frames: jpeg (small, fast) or png (lossless)."""
    jpeg_quality: int = 90
    """JPEG quality 1..100 of rendered frames."""
    thumbnail_size: int = 64
    """Long side in pixels of the training-image thumbnails on the camera frustums."""
    max_frustums: int = 100
    """Most training cameras drawn (evenly subsampled)."""
    splats_in_browser: bool = True
    """Splat models: rasterize in the browser (viser's WebGL splats) rather than on the
    server. Depth and opacity outputs, and splats of the antialiased mode (which viser does
    not draw), are always rendered on the server at first."""
    verbose: bool = True
    """Print the URL when the server starts."""
