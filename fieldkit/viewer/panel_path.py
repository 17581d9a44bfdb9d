"""GUI panel "Camera path": keyframes from the current view, preview, save/load, render video.

Saved paths are the JSON that ``fieldkit render RUN --path FILE.json`` reads
(``fieldkit/viewer/keyframes.py``); they go to RUN/viewer/ and are offered for download.
"""
from __future__ import annotations

import json
import threading
import time

import numpy as np

from fieldkit.errors import FieldkitError
from fieldkit.viewer.camera import ViewCamera
from fieldkit.viewer.keyframes import CameraPath, Keyframe
from fieldkit.viewer.jobs import run_job


def _options(path: CameraPath) -> tuple[str, ...]:
    return tuple(str(i + 1) for i in range(len(path.keyframes))) or ("none",)


def build_path_panel(session) -> None:
    gui, h = session.client.gui, session.handles
    with gui.add_folder("Camera path", expand_by_default=False):
        h["path_status"] = gui.add_markdown("no keyframes")
        h["keyframe"] = gui.add_dropdown("keyframe", ("none",))
        h["kf_add"] = gui.add_button("add keyframe", hint="the current view, after the "
                                     "selected keyframe")
        h["kf_move"] = gui.add_button("move keyframe here", hint="replace the selected "
                                      "keyframe by the current view")
        h["kf_delete"] = gui.add_button("delete keyframe")
        h["kf_goto"] = gui.add_button("go to keyframe")
        h["seconds"] = gui.add_number("seconds", 4.0, min=0.1, max=600.0, step=0.1)
        h["fps"] = gui.add_number("fps", 30, min=1, max=120, step=1)
        h["loop"] = gui.add_checkbox("loop", False)
        h["video_width"] = gui.add_number("video width", 640, min=16, max=4096, step=2)
        h["video_height"] = gui.add_number("video height", 480, min=16, max=4096, step=2)
        h["preview"] = gui.add_button("preview path", hint="fly the camera along the path")
        h["path_file"] = gui.add_text("file", "camera_path.json")
        h["save_path"] = gui.add_button("save path")
        h["load_path"] = gui.add_button("load path", hint="from the file name above")
        h["upload_path"] = gui.add_upload_button("upload path", mime_type="application/json")
        h["render_video"] = gui.add_button("render video")
        h["video_progress"] = gui.add_progress_bar(0.0, visible=False)
        h["video_status"] = gui.add_markdown("")
    Controller(session)


class Controller:
    """Callbacks of the camera path panel of one session."""

    def __init__(self, session):
        self.s, self.h = session, session.handles
        self.previewing = threading.Event()
        h = self.h
        h["kf_add"].on_click(lambda _: self.add())
        h["kf_move"].on_click(lambda _: self.move())
        h["kf_delete"].on_click(lambda _: self.delete())
        h["kf_goto"].on_click(lambda _: self.goto())
        h["preview"].on_click(lambda _: self.preview())
        h["save_path"].on_click(lambda _: self.guard(self.save))
        h["load_path"].on_click(lambda _: self.guard(self.load_file))
        h["upload_path"].on_upload(lambda _: self.guard(self.upload))
        h["render_video"].on_click(lambda _: self.render_video())
        for k in ("seconds", "fps", "loop", "video_width", "video_height"):
            h[k].on_update(lambda _: self.sync_settings())

    # ------------------------------------------------------------------ helpers
    @property
    def path(self) -> CameraPath:
        return self.s.path

    def selected(self) -> int | None:
        v = self.h["keyframe"].value
        return int(v) - 1 if v != "none" else None

    def sync_settings(self) -> None:
        p, h = self.path, self.h
        p.seconds, p.fps, p.loop = float(h["seconds"].value), int(h["fps"].value), \
            bool(h["loop"].value)
        p.width, p.height = int(h["video_width"].value), int(h["video_height"].value)

    def refresh(self, select: int | None = None) -> None:
        """Dropdown, status line and the keyframe markers in the scene."""
        p, h = self.path, self.h
        h["keyframe"].options = _options(p)
        if select is not None and p.keyframes:
            h["keyframe"].value = str(min(max(select, 0), len(p.keyframes) - 1) + 1)
        n = len(p.keyframes)
        h["path_status"].content = (f"{n} keyframe{'s' if n != 1 else ''}, {p.num_frames} "
                                    f"frames at {p.fps} fps" if n else "no keyframes")
        scene = self.s.client.scene
        scene.remove_by_name("/keyframes")
        for i, kf in enumerate(p.keyframes):
            v = ViewCamera.from_c2w(kf.c2w, kf.fov, p.width / p.height)
            scene.add_camera_frustum(f"/keyframes/{i:03d}", fov=v.fov, aspect=v.aspect,
                                     scale=0.08, color=(255, 140, 0), wxyz=v.wxyz,
                                     position=v.position)
        if n >= 2:
            c2w, _ = p.interpolate(min(p.num_frames, 200))
            pts = c2w[:, :3, 3].astype(np.float32)
            scene.add_line_segments("/keyframes/spline", np.stack([pts[:-1], pts[1:]], 1),
                                    colors=(255, 140, 0))

    def status(self, text: str) -> None:
        self.h["video_status"].content = text

    def guard(self, fn) -> None:
        try:
            fn()
        except FieldkitError as e:
            self.status(f"**error**: {e}")

    # ------------------------------------------------------------------ keyframes
    def add(self) -> None:
        view = self.s.view.view
        if view is None:
            return
        self.sync_settings()
        i = self.selected()
        at = len(self.path.keyframes) if i is None else i + 1
        self.path.keyframes.insert(at, Keyframe.from_view(view))
        if len(self.path.keyframes) == 1:  # the video takes the view's aspect
            self.h["video_height"].value = int(round(self.path.width / view.aspect / 2) * 2)
            self.sync_settings()
        self.refresh(select=at)

    def move(self) -> None:
        i, view = self.selected(), self.s.view.view
        if i is not None and view is not None:
            self.path.keyframes[i] = Keyframe.from_view(view)
            self.refresh(select=i)

    def delete(self) -> None:
        i = self.selected()
        if i is not None:
            del self.path.keyframes[i]
            self.refresh(select=max(i - 1, 0))

    def goto(self) -> None:
        i, view = self.selected(), self.s.view.view
        if i is not None:
            kf = self.path.keyframes[i]
            self.s.set_camera(ViewCamera.from_c2w(kf.c2w, kf.fov, view.aspect if view else 1))

    def preview(self) -> None:
        """Fly the browser camera along the path in real time (click again to stop)."""
        if self.previewing.is_set():
            self.previewing.clear()
            return
        self.sync_settings()
        if not self.path.keyframes:
            self.status("add keyframes first")
            return
        c2w, fov = self.path.interpolate()
        self.previewing.set()

        def fly():
            aspect = self.s.view.view.aspect if self.s.view.view else 1.0
            t0 = time.monotonic()
            for i in range(len(c2w)):
                if not self.previewing.is_set():
                    break
                self.s.set_camera(ViewCamera.from_c2w(c2w[i], fov[i], aspect))
                time.sleep(max(0.0, t0 + (i + 1) / self.path.fps - time.monotonic()))
            self.previewing.clear()

        threading.Thread(target=fly, daemon=True).start()

    # ------------------------------------------------------------------ files
    def file_path(self):
        name = self.h["path_file"].value.strip() or "camera_path.json"
        if "/" in name or "\\" in name or not name.endswith(".json"):
            raise FieldkitError("the path file name must be a plain NAME.json")
        return self.s.viewer.output_dir / "paths" / name

    def save(self) -> None:
        self.sync_settings()
        out = self.path.save(self.file_path())
        self.status(f"saved `{out}`; render it with `fieldkit render RUN --path {out}`")
        self.s.client.send_file_download(out.name, out.read_bytes())

    def _loaded(self, path: CameraPath) -> None:
        self.s.path = path
        h = self.h
        h["seconds"].value, h["fps"].value, h["loop"].value = path.seconds, path.fps, path.loop
        h["video_width"].value, h["video_height"].value = path.width, path.height
        self.refresh(select=0)

    def load_file(self) -> None:
        self._loaded(CameraPath.load(self.file_path(), self.from_nerfstudio))
        self.status(f"loaded {len(self.path.keyframes)} keyframes")

    def from_nerfstudio(self, cams):
        """A nerfstudio camera path's cameras in the shown model's coordinates."""
        return self.s.viewer.sources[0].from_nerfstudio(cams)

    def upload(self) -> None:
        f = self.h["upload_path"].value
        try:
            data = json.loads(f.content.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FieldkitError(f"{f.name} is not JSON ({e})") from None
        self._loaded(CameraPath.from_json(data, f.name, self.from_nerfstudio))
        self.status(f"loaded {len(self.path.keyframes)} keyframes from {f.name}")

    def render_video(self) -> None:
        self.sync_settings()
        if not self.path.keyframes:
            self.status("add keyframes first")
            return
        from fieldkit.viewer.jobs import render_path_video

        session, path = self.s, self.path
        name = self.h["path_file"].value.strip().removesuffix(".json") or "camera_path"
        out = session.viewer.output_dir / "videos" / f"{name}.mp4"
        run_job(session, "video", lambda progress: render_path_video(session, path, out,
                                                                     progress),
                self.h["video_progress"], self.h["video_status"])
