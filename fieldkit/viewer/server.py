"""The Viewer: a viser server, one session per browser, the render thread, background jobs.

``Viewer(sources, config)`` starts serving at once (``url``). Without a live trainer,
``start_render_thread`` renders in a background thread; with one (``fieldkit/viewer/live.py``)
the training thread renders between steps. ``serve`` is what ``fieldkit view`` runs.
"""
from __future__ import annotations

import socket
import threading
import time
import warnings
from pathlib import Path
from urllib.parse import quote

import numpy as np

from fieldkit.errors import FieldkitError
from fieldkit.viewer import require_viser
from fieldkit.viewer.auth import token_gate
from fieldkit.viewer.camera import ViewCamera
from fieldkit.viewer.config import ViewerConfig
from fieldkit.viewer.frame import FrameSettings
from fieldkit.viewer.keyframes import CameraPath
from fieldkit.viewer.scene_nodes import Frustums, add_frustums, solid_background
from fieldkit.viewer.scheduler import ClientView, Renderer


DEPTH_SIDE = 256
"""Long side of the depth sent with a frame (every k-th pixel): it only decides which of the 3D
scene's objects the models hide. A 512 px frame's full depth took ~10 ms to encode as a PNG
here (~100 ms for a noisy one, without OpenCV)."""


class Session:
    """One connected browser: its render state, camera path and GUI handles."""

    def __init__(self, viewer: Viewer, client):
        self.viewer, self.client = viewer, client
        src = viewer.sources[0]
        self.view = ClientView(client.client_id, self.send_frame,
                               FrameSettings(background=src.background),
                               max_resolution=viewer.config.max_resolution,
                               preview_resolution=viewer.config.preview_resolution)
        self.path = CameraPath()
        # viser's WebGL splats have no antialiased mode: such splats are drawn on the server
        self.splats_in_browser = (viewer.config.splats_in_browser and self.single_splat
                                  and not getattr(src.model.config.render, "antialiased", False))
        self.splat_node = None
        self.handles: dict = {}
        """GUI handles by name (tests and panels look them up)."""

    @property
    def single_splat(self) -> bool:
        return len(self.viewer.sources) == 1 and self.viewer.sources[0].is_splat

    def send_frame(self, img: np.ndarray, depth: np.ndarray | None = None) -> None:
        """Show ``img`` [H, W, 3] uint8 behind the 3D scene; with ``depth`` [H, W, 1] (view
        depth, box units) the scene's objects behind the rendered models are hidden."""
        cfg = self.viewer.config
        if depth is not None:   # at most DEPTH_SIDE px a side: a PNG of it costs far less
            step = -(-max(depth.shape[:2]) // DEPTH_SIDE)
            depth = np.ascontiguousarray(depth[::step, ::step])
        self.client.scene.set_background_image(img, format=cfg.image_format,
                                               jpeg_quality=cfg.jpeg_quality, depth=depth)

    def camera_changed(self, camera) -> None:
        self.view.set_camera(ViewCamera(tuple(camera.wxyz), tuple(camera.position),
                                        float(camera.fov), float(camera.aspect)))
        self.viewer.renderer.wake.set()
        self.viewer.eye_moved(np.asarray(camera.position, dtype=np.float64))

    def set_camera(self, view: ViewCamera) -> None:
        """Move this browser's camera (keyframes, path preview, frustum clicks)."""
        cam = self.client.camera
        with self.client.atomic():
            cam.fov = view.fov
            cam.position = view.position
            cam.wxyz = view.wxyz

    def refresh_render_mode(self) -> None:
        """Browser splats for rgb of a lone splat model, else server frames. With a live
        trainer this runs on the training thread (the Gaussians change during a step)."""
        live = self.viewer.live
        if (live is not None and not live.finished
                and threading.current_thread() is not threading.main_thread()):
            live.call_between_steps(self._refresh_render_mode)
        else:
            self._refresh_render_mode()

    def _refresh_render_mode(self) -> None:
        from fieldkit.viewer.scene_nodes import add_splats

        s = self.view.settings
        browser = self.splats_in_browser and s.output == "rgb"
        with self.view.lock:   # before the background: no server frame may follow it
            self.view.server_render = not browser
            if browser:
                self.view.job = None
        if browser:
            src = self.viewer.sources[0]
            with src.lock:
                self.splat_node = add_splats(self.client.scene, src, s.crop)
            self.send_frame(solid_background(s.background))
            self.view.shown_key = None
        elif self.splat_node is not None:
            self.client.scene.remove_by_name("/splats")
            self.splat_node = None
        self.view.touch()
        self.viewer.renderer.wake.set()


class Viewer:
    """Serves ``sources`` (one model, or two to compare) to every browser that connects."""

    def __init__(self, sources: list, config: ViewerConfig | None = None, live=None):
        if not sources or len(sources) > 2:
            raise FieldkitError("the viewer shows one model, or two to compare")
        viser = require_viser()
        # a frame finished for a browser that has just closed is dropped: not worth a warning
        warnings.filterwarnings("ignore", message="Queued a .* on a closed connection")
        self.sources, self.config = sources, config or ViewerConfig()
        self.live = live
        """The LiveTraining attached to this viewer, or None."""
        self.renderer = Renderer(sources, self.config)
        self.sessions: dict[int, Session] = {}
        self._stop = threading.Event()
        self._render_thread: threading.Thread | None = None
        self.frustums = Frustums([], np.zeros((0, 3)), 1.0)
        """The training cameras' frustums (added in the background)."""
        self.job_lock = threading.Lock()
        """Held by the background job running (exports, videos): one at a time."""
        server = None
        try:
            with token_gate(self.config.token):
                server = viser.ViserServer(host=self.config.host, port=self.config.port,
                                           label="fieldkit", verbose=False)
        except OSError as e:
            raise FieldkitError(f"cannot serve on {self.config.host}:{self.config.port} ({e}); "
                                "pick another --port or --host") from None
        except FieldkitError:
            if server is not None:
                server.stop()
            raise
        self.server = server
        self.server.gui.configure_theme(control_width="medium", dark_mode=False)
        pos, target, fov = sources[0].home_pose()
        ic = self.server.initial_camera
        ic.position, ic.look_at, ic.fov = tuple(pos), tuple(target), fov
        ic.up = tuple(float(x) for x in sources[0].up())
        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(self._disconnect)
        threading.Thread(target=self._add_frustums, daemon=True).start()

    # ------------------------------------------------------------------ facts
    @property
    def port(self) -> int:
        return self.server.get_port()

    @property
    def url(self) -> str:
        host = self.config.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        base = f"http://{host}:{self.port}/"
        return base + (f"?token={quote(self.config.token)}" if self.config.token else "")

    @property
    def output_dir(self) -> Path:
        """Where videos, paths and exports go: RUN/viewer/, or beside the .ply file."""
        src = self.sources[0]
        root = src.run_dir if src.run_dir is not None else src.ply_path.parent
        return Path(root) / "viewer"

    # ------------------------------------------------------------------ clients
    def _connect(self, client) -> None:
        from fieldkit.viewer.panel_export import build_export_panel
        from fieldkit.viewer.panel_path import build_path_panel
        from fieldkit.viewer.panel_render import build_render_panel

        session = Session(self, client)
        client.camera.on_update(session.camera_changed)
        if self.live is not None:
            self.live.build_panel(session)
        build_render_panel(session)
        build_path_panel(session)
        build_export_panel(session)
        session.camera_changed(client.camera)
        self.renderer.add(session.view)
        session.refresh_render_mode()
        self.sessions[client.client_id] = session

    def _disconnect(self, client) -> None:
        self.sessions.pop(client.client_id, None)
        self.renderer.remove(client.client_id)

    def eye_moved(self, eye: np.ndarray) -> None:
        """A browser camera moved to ``eye`` [3]: the frustums near it hide, the others show."""
        self.frustums.update(eye=eye)

    def _add_frustums(self) -> None:
        def jump(event, view):
            session = self.sessions.get(event.client_id)
            if session is not None:
                session.set_camera(view)

        try:
            # the first view is training camera 0 (Source.home_pose): its frustum goes bare
            frustums = add_frustums(self.server.scene, self.sources[0],
                                    self.config.max_frustums, self.config.thumbnail_size,
                                    on_click=jump, plain=(0,))
            frustums.update(eye=self.frustums.eye)   # where the eye went meanwhile
            self.frustums = frustums
        except Exception as e:  # frustums are a nicety, never fatal
            from fieldkit.errors import warn

            warn(f"training cameras not shown ({e})")

    # ------------------------------------------------------------------ running
    def start_render_thread(self) -> None:
        if self._render_thread is None or not self._render_thread.is_alive():
            self._render_thread = threading.Thread(target=self.renderer.loop,
                                                   args=(self._stop,), daemon=True)
            self._render_thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._render_thread is not None:
            self._render_thread.join(timeout=5)
        self.server.stop()

    def wait_for_clients(self, n: int = 1, timeout: float = 30.0) -> bool:
        """Block until ``n`` browsers are connected (tests, benchmarks)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if len(self.sessions) >= n:
                return True
            time.sleep(0.05)
        return False

    def print_url(self) -> None:
        if not self.config.verbose:
            return
        print(f"viewer     {self.url}", flush=True)
        if self.config.host not in ("127.0.0.1", "localhost", "::1") and not self.config.token:
            print("warning: the viewer is open to the network without --token", flush=True)


def open_sources(target: Path, other: Path | None = None, scene: Path | None = None,
                 downscale: int = 1, ply_transform: Path | None = None) -> list:
    """Sources for ``fieldkit view TARGET [OTHER]``: a run folder, a 3DGS .ply, a 3DGS output
    folder, gsplat's results or a splatfacto run (or either's checkpoint) each. ``scene``,
    ``downscale`` and ``ply_transform`` place TARGET's Gaussians as ``fieldkit distill`` does
    (``fieldkit/splats/foreign.py``)."""
    from fieldkit.splats.foreign import SPLAT_FILES, latest_in
    from fieldkit.viewer.sources import Source

    def one(p: Path, **where):
        p = Path(p)
        if p.suffix.lower() in SPLAT_FILES:
            if not p.is_file():
                raise FieldkitError(f"{p} does not exist; pass a 3DGS .ply file or a run folder")
            return Source.from_ply(p, **where)
        if not p.is_dir():
            raise FieldkitError(f"{p} is not a run folder or a .ply file; pass the --out "
                                "folder of `fieldkit train` or a 3DGS .ply")
        ply = latest_in(p)
        if ply is not None:  # a 3DGS output folder, gsplat's results, a splatfacto run
            return Source.from_ply(ply, label=p.name, **where)
        if scene is not None or ply_transform is not None:
            raise FieldkitError("--scene and --ply-transform are for splat files; a run "
                                "brings its own scene")
        return Source.from_run(p)

    sources = [one(target, scene=scene, downscale=downscale, ply_transform=ply_transform)]
    if other is not None:
        sources.append(one(other))
        a, b = sources
        if (a.normalisation is None) != (b.normalisation is None) or (
                a.normalisation is not None and not np.allclose(
                    a.normalisation.matrix(), b.normalisation.matrix(), atol=1e-6)):
            from fieldkit.errors import warn

            warn(f"{a.label} and {b.label} were not trained in the same box (different scenes "
                 "or normalisations); the comparison shows them in their own box coordinates")
    return sources


def serve(target: Path, other: Path | None, config: ViewerConfig, **where) -> None:
    """``fieldkit view``: serve until Ctrl-C (``where``: ``open_sources``' scene, downscale and
    ply_transform)."""
    viewer = Viewer(open_sources(target, other, **where), config)
    viewer.start_render_thread()
    viewer.print_url()
    try:
        while True:
            time.sleep(1.0)
    finally:
        viewer.stop()
