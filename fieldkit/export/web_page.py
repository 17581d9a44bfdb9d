"""Exports as one self-contained web page (``--out scene.html``): splats, a mesh or a point
cloud that anyone opens in a browser, offline, with no server and nothing to install.

The page is viser's own browser client (the one ``fieldkit view`` serves) with the scene
embedded in it, compressed: WebGL draws the splats (base colours, as viser's splat renderer
does), the mesh (vertex colours) or the points. It opens at the run's first training camera,
looking where the cameras look, with the run's background and the capture's up. A page is
drawn in the run's box coordinates, as the viewer draws it (``PageView``).
"""
from __future__ import annotations

import contextlib
import html
import io
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from fieldkit.data.normalize import Normalisation
from fieldkit.errors import FieldkitError

PAGE_SUFFIX = ".html"
"""The suffix of ``--out`` that asks for a web page."""


def is_page(out: Path) -> bool:
    return Path(out).suffix.lower() == PAGE_SUFFIX


@dataclass(frozen=True)
class PageView:
    """The page's frame and where its camera starts. A run's page is drawn in its box
    coordinates, as the viewer draws it: a few units across whatever the capture's world units
    (viser sends covariances and points as 16-bit floats, and clips beyond 1000 units)."""

    position: np.ndarray
    """[3] the eye."""
    look_at: np.ndarray
    """[3] the orbit centre."""
    up: np.ndarray
    """[3] unit up direction."""
    fov: float
    """Vertical field of view, radians."""
    background: tuple[float, float, float]
    """Canvas colour, 0-1."""
    normalisation: Normalisation | None = None
    """World -> page transform of exports made in world units (None: they are in the page's
    frame already)."""

    def to_page(self, points: np.ndarray) -> np.ndarray:
        """[N, 3] world points -> [N, 3] page points."""
        if self.normalisation is None:
            return np.asarray(points, dtype=np.float64)
        return self.normalisation.to_box(torch.as_tensor(np.asarray(points, np.float64))).numpy()

    @classmethod
    def of_run(cls, run_dir: Path) -> PageView:
        """The viewer's first view of the run (``of_subject``)."""
        from fieldkit.export.subject import open_subject

        return cls.of_subject(open_subject(run_dir))

    @classmethod
    def of_subject(cls, subject) -> PageView:
        """The viewer's first view of an export's ``Subject`` (a run, or a splat file opened in
        its box): its first training camera (or view), looking at the point its cameras look
        at, +z up (a run's normalisation turns the capture upright), in its box."""
        from fieldkit.viewer.sources import Source

        source = Source(label=subject.label, model=None, run_dir=subject.run_dir,
                        normalisation=subject.normalisation, cameras=subject.cameras,
                        background=subject.background)
        return replace(cls.of_source(source), normalisation=subject.normalisation)

    @classmethod
    def of_source(cls, source) -> PageView:
        """The viewer's first view of a ``fieldkit/viewer/sources.py`` Source, in its own
        coordinates (a bare splat file's)."""
        position, look_at, fov = source.home_pose()
        return cls(position=np.asarray(position, dtype=np.float64),
                   look_at=np.asarray(look_at, dtype=np.float64),
                   up=np.asarray(source.up(), dtype=np.float64), fov=float(fov),
                   background=tuple(source.background))


FILE_PAGE_WORKERS = """<script>
if (location.protocol === "file:") {
  /* A page opened from disk has an opaque origin, where Chromium will not start a module
     worker from a blob: URL; viser's splat sorter is one, and without it splats are drawn
     unsorted. The same source as a data: URL starts. */
  const sources = new Map(), srcOf = new WeakMap();
  const NativeBlob = window.Blob;
  window.Blob = class extends NativeBlob {
    constructor(parts, options) {
      super(parts, options);
      if (/javascript/.test((options && options.type) || "") && Array.isArray(parts) &&
          parts.every((p) => typeof p === "string")) srcOf.set(this, parts.join(""));
    }
  };
  const createURL = URL.createObjectURL;
  URL.createObjectURL = function (obj) {
    const url = createURL.call(URL, obj);
    if (srcOf.has(obj)) sources.set(url, srcOf.get(obj));
    return url;
  };
  const NativeWorker = window.Worker;
  window.Worker = class extends NativeWorker {
    constructor(url, options) {
      const src = sources.get(String(url));
      if (src !== undefined && options && options.type === "module")
        url = "data:text/javascript;charset=utf-8," + encodeURIComponent(src);
      super(url, options);
    }
  };
}
</script>"""
"""Injected first in a page's <head>: makes viser's module workers start when the page is
opened from disk (tests/viewer/test_web_page_browser.py draws two overlapping splats whose
order is right only when the sorter runs)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_page(out: Path, view: PageView, add: Callable[[object], None],
               title: str = "fieldkit") -> Path:
    """Write a self-contained page to ``out``: ``add(scene)`` puts the content into a viser
    scene (``viser.SceneApi``), which is embedded with its client. A viser server lives on a
    free port of 127.0.0.1 for the moment it takes (its own banner is silenced)."""
    try:
        import viser
    except ImportError:
        raise FieldkitError("a web page export needs viser; install it with "
                            "`pip install 'fieldkit[viewer]'`") from None
    from fieldkit.viewer.scene_nodes import solid_background

    out = Path(out)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        server = viser.ViserServer(host="127.0.0.1", port=_free_port(), label="fieldkit",
                                   verbose=False)
        try:
            ic = server.initial_camera
            ic.position, ic.look_at = tuple(view.position), tuple(view.look_at)
            ic.up, ic.fov = tuple(float(x) for x in view.up), float(view.fov)
            server.scene.set_background_image(solid_background(view.background), format="png")
            add(server.scene)
            page = server.scene.as_html()
        finally:
            server.stop()
    page = page.replace("<title>Viser</title>", f"<title>{html.escape(title)}</title>", 1)
    head = page.index("<head>") + len("<head>")
    page = page[:head] + FILE_PAGE_WORKERS + page[head:]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out


def browser_splats(params: dict[str, Tensor]) -> dict[str, np.ndarray]:
    """Splat params (``SplatModel.export_params`` layout) as viser draws them: centers
    [N, 3], covariances [N, 3, 3], rgbs [N, 3] (base colour, SH degree 0) and opacities
    [N, 1], float32."""
    from fieldkit.encoders.sh import C0
    from fieldkit.splats.transform import quat_to_rotmat

    p = {k: v.detach().float().cpu() for k, v in params.items()}
    R = quat_to_rotmat(p["quats"])                                    # [N, 3, 3]
    M = R * torch.exp(p["scales"])[:, None, :]
    rgb = (p["sh0"][:, 0] * C0 + 0.5).clamp(0, 1)
    return {"centers": p["means"].numpy(), "covariances": (M @ M.transpose(1, 2)).numpy(),
            "rgbs": rgb.numpy(), "opacities": torch.sigmoid(p["opacities"])[:, None].numpy()}


def splats_page(out: Path, params: dict[str, Tensor], view: PageView, title: str) -> Path:
    """A page of splat params in the page's frame (a run's box)."""
    s = browser_splats(params)
    return write_page(out, view, lambda scene: scene.add_gaussian_splats("/splats", **s), title)


def mesh_page(out: Path, mesh, view: PageView, title: str) -> Path:
    """A page of an open3d TriangleMesh (vertex colours, world units)."""
    from fieldkit.export.mesh import to_trimesh

    if len(mesh.triangles) == 0:
        raise FieldkitError("the mesh is empty; nothing to put on a page")
    tm = to_trimesh(mesh, view.to_page(np.asarray(mesh.vertices)))
    return write_page(out, view, lambda scene: scene.add_mesh_trimesh("/mesh", tm), title)


def points_page(out: Path, cloud, view: PageView, title: str) -> Path:
    """A page of an open3d PointCloud (colours, world units); each point is drawn as wide as
    the median gap to its nearest neighbour."""
    pts = view.to_page(np.asarray(cloud.points)).astype(np.float32)
    colors = (np.clip(np.asarray(cloud.colors), 0, 1) * 255).round().astype(np.uint8)
    size = float(np.median(np.asarray(cloud.compute_nearest_neighbor_distance())))
    if view.normalisation is not None:
        size *= view.normalisation.scale
    return write_page(out, view, lambda scene: scene.add_point_cloud(
        "/points", pts, colors, point_size=max(size, 1e-6), point_shape="rounded"), title)
