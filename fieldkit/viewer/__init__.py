"""The browser viewer (``fieldkit view``, ``fieldkit train --viewer``), built on viser.

One concept per file:

- ``config.py``      ViewerConfig: host, port, token, resolutions, render budget
- ``camera.py``      browser camera <-> ``Cameras`` (both OpenCV axes), sub-cameras for strips
- ``keyframes.py``   camera path editor model: keyframes, interpolation, JSON in/out
- ``sources.py``     what is shown: a model behind a lock, its box, cameras and run folder
- ``frame.py``       one frame: layout (single, side by side, split), strips, images
- ``scheduler.py``   per-client view state, adaptive resolution, the rendering time budget
- ``auth.py``        the access token gate (HTTP cookie checked on the websocket handshake)
- ``scene_nodes.py`` training-camera frustums, splats sent to the browser, crop box outline
- ``panel_*.py``     GUI panels: render settings (with the crop box of
                     ``fieldkit/render/crop.py``), training, camera path, exports
- ``server.py``      the Viewer: viser server, client sessions, the render thread
- ``live.py``        training with the viewer attached between ``trainer.step()`` calls

viser is imported lazily (``require_viser``) so fieldkit works without it.
"""
from __future__ import annotations

from fieldkit.errors import FieldkitError

INSTALL_HINT = "pip install 'fieldkit[viewer]'"


def require_viser():
    """The viser module, or a one-line ``FieldkitError`` saying how to install it."""
    try:
        import viser
    except ImportError:
        raise FieldkitError(f"the viewer needs viser, which is not installed; run "
                            f"`{INSTALL_HINT}`") from None
    return viser
