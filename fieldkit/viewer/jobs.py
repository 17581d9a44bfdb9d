"""Background jobs started from the browser: videos along a camera path and exports.

One job runs at a time per viewer, in its own thread, with a progress bar and a status line in
the panel that started it; the file it writes is offered to that browser for download. Jobs
call the same library functions as the command line (``export_mesh``, ``export_points``,
``export_splats``, ``write_video``). With a live trainer, a job works on a snapshot taken
between two training steps (videos) or on the checkpoint saved there (exports).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from fieldkit.errors import FieldkitError

MAX_DOWNLOAD_BYTES = 512 << 20
"""Larger files are written but not sent through the websocket."""


def run_job(session, name: str, work: Callable[[Callable[[float], None]], Path],
            progress_bar, status) -> bool:
    """Start ``work(progress)`` in a thread (``progress(fraction)`` moves the bar; None
    fraction: unknown, the bar animates). Returns False when another job is running."""
    viewer = session.viewer
    if not viewer.job_lock.acquire(blocking=False):
        status.content = "another job is running; wait for it to finish"
        return False

    def progress(fraction: float | None) -> None:
        if fraction is None:
            progress_bar.animated = True
            progress_bar.value = 100.0
        else:
            progress_bar.animated = False
            progress_bar.value = float(min(max(fraction, 0.0), 1.0) * 100)

    def body():
        t0 = time.monotonic()
        done = threading.Event()

        def ticker():  # elapsed time while the library works without reporting progress
            while not done.wait(1.0):
                status.content = f"{name}: working ({time.monotonic() - t0:.0f} s)"

        try:
            progress_bar.visible = True
            progress(0.0)
            status.content = f"{name}: starting"
            threading.Thread(target=ticker, daemon=True).start()
            out = work(progress)
            done.set()
            progress(1.0)
            size = out.stat().st_size
            status.content = (f"{name}: wrote `{out}` ({size / 2**20:.1f} MiB, "
                              f"{time.monotonic() - t0:.0f} s)")
            if size <= MAX_DOWNLOAD_BYTES:
                session.client.send_file_download(out.name, out.read_bytes())
        except FieldkitError as e:
            done.set()
            status.content = f"**{name} failed**: {e}"
        except Exception as e:  # report in the panel; the viewer keeps running
            done.set()
            status.content = f"**{name} failed**: {type(e).__name__}: {e}"
        finally:
            done.set()
            progress_bar.animated = False
            viewer.job_lock.release()

    threading.Thread(target=body, daemon=True, name=f"fieldkit-{name}").start()
    return True


def job_sources(session) -> list:
    """The sources a job may use while training goes on: frozen snapshots with a live
    trainer, else the viewer's own."""
    viewer = session.viewer
    if viewer.live is not None and not viewer.live.finished:
        return viewer.live.call_between_steps(lambda: [s.snapshot() for s in viewer.sources])
    return viewer.sources


def render_path_video(session, path, out: Path, progress) -> Path:
    """Render ``path`` (a ``CameraPath``) with the session's output, background, crop and
    comparison layout into ``out`` (mp4)."""
    from fieldkit.export.video import write_video
    from fieldkit.viewer.frame import FrameJob

    sources = job_sources(session)
    cams = path.cameras()
    settings = session.view.settings
    n = len(cams)

    def frames():
        for i in range(n):
            job = FrameJob(sources, cams[i], settings, key=None)
            while not job.done:
                job.run_piece()
            progress((i + 1) / n)
            yield job.image()

    write_video(out, frames(), fps=path.fps)
    return out


def export_source(session):
    """What an export reads: the run folder (``checkpointed_run``), or the splat file shown,
    opened as it was placed (an export ``Subject``; the viewer's crop box is in its
    coordinates, as ``Subject.take_crop`` takes it)."""
    from fieldkit.export.subject import open_subject

    src = session.viewer.sources[0]
    if src.run_dir is None and getattr(src, "ply_path", None) is not None:
        return open_subject(src.ply_path, **src.ply_options)
    return checkpointed_run(session)


def checkpointed_run(session) -> Path:
    """The run folder with the model as it is now (a live trainer saves between steps)."""
    viewer = session.viewer
    src = viewer.sources[0]
    if src.run_dir is None:
        raise FieldkitError("this export needs a run folder (the viewer shows a bare .ply)")
    if viewer.live is not None and not viewer.live.finished:
        viewer.live.call_between_steps(src.trainer.save)
    return src.run_dir


def page_view(session):
    """Where a web page exported from this browser opens: where it looks now, on the
    background it shows (``web_page.PageView``; None without a browser camera)."""
    import numpy as np

    from fieldkit.export.web_page import PageView

    camera = getattr(getattr(session, "client", None), "camera", None)
    if camera is None:
        return None
    src = session.viewer.sources[0]
    return PageView(position=np.asarray(camera.position, dtype=np.float64),
                    look_at=np.asarray(camera.look_at, dtype=np.float64),
                    up=np.asarray(camera.up_direction, dtype=np.float64), fov=float(camera.fov),
                    background=tuple(session.view.settings.background),
                    normalisation=src.normalisation)


def export_mesh_job(session, out: Path, resolution: int, progress,
                    method: str | None = None) -> Path:
    """The mesh of the model shown (inside the crop box when one is on), by ``method`` (mc,
    tsdf or poisson; default mc for density fields, tsdf for splats)."""
    from fieldkit.export.run import export_run

    progress(None)
    method = method or ("tsdf" if session.viewer.sources[0].is_splat else "mc")
    return export_run("mesh", export_source(session), out, method, resolution,
                      crop=session.view.settings.crop, page=page_view(session))[0]


def export_points_job(session, out: Path, num: int, progress) -> Path:
    """The point cloud of the model shown (inside the crop box when one is on)."""
    from fieldkit.export.run import export_run

    progress(None)
    return export_run("points", export_source(session), out, num=num,
                      crop=session.view.settings.crop, page=page_view(session))[0]


def export_splats_job(session, out: Path, progress, keep=None) -> Path:
    """The Gaussians shown (inside the crop box when one is on), less those ``keep`` (a
    ``SplatFilter``) leaves out."""
    from fieldkit.export.splats import SplatFilter

    progress(None)
    src = session.viewer.sources[0]
    crop, keep = session.view.settings.crop, (keep or SplatFilter()).check()
    if src.run_dir is None:  # a bare splat file: write the Gaussians shown
        from fieldkit.export.splats import splat_format, write_splats
        from fieldkit.export.web_page import PAGE_SUFFIX, PageView, splats_page
        from fieldkit.render.crop import crop_splat_params

        out.parent.mkdir(parents=True, exist_ok=True)
        with src.lock:
            params = keep.apply(crop_splat_params(src.model.export_params(), crop))
        if splat_format(out) == PAGE_SUFFIX:
            view = page_view(session) or PageView.of_source(src)
            return splats_page(out, params, view, src.label)
        return write_splats(out, params, splat_format(out),
                            antialiased=src.model.config.render.antialiased)
    from fieldkit.export.splats import export_splats

    return export_splats(checkpointed_run(session), out, crop=crop, keep=keep,
                         page=page_view(session))[0]
