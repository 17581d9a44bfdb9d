"""GUI panel "Render": output, background, resolutions, splat rendering, comparison, crop box."""
from __future__ import annotations

from fieldkit.viewer.camera import ViewCamera
from fieldkit.render.crop import CropBox
from fieldkit.viewer.frame import LAYOUTS, OUTPUTS
from fieldkit.viewer.scene_nodes import add_crop_outline


def _describe(source) -> str:
    m = source.model
    if source.is_splat:
        aa = ", antialiased (drawn on the server)" if m.config.render.antialiased else ""
        return f"**{source.label}**: splat, {m.num_gaussians:,} Gaussians{aa}"
    return f"**{source.label}**: {source.kind}, {m.num_params:,} parameters"


def build_render_panel(session) -> None:
    viewer, gui, view = session.viewer, session.client.gui, session.view
    sources = viewer.sources
    h = session.handles
    with gui.add_folder("Render"):
        h["info"] = gui.add_markdown("  \n".join(_describe(s) for s in sources))
        h["output"] = gui.add_dropdown("output", OUTPUTS, initial_value="rgb",
                                       hint="rgb, depth (turbo colour map) or opacity")
        bg = tuple(int(round(c * 255)) for c in view.settings.background)
        h["background"] = gui.add_rgb("background", bg)
        h["max_res"] = gui.add_slider("max resolution", 64, 2048, 32,
                                      view.max_resolution,
                                      hint="long side in pixels once the camera stops")
        h["preview_res"] = gui.add_slider("preview resolution", 32, 512, 16,
                                          view.preview_resolution,
                                          hint="long side in pixels while the camera moves")
        if session.single_splat:
            h["splat_mode"] = gui.add_dropdown(
                "splats drawn by", ("browser", "server"),
                initial_value="browser" if session.splats_in_browser else "server",
                hint="browser: WebGL splats (fast, rgb); server: fieldkit's rasterizer")
        if len(sources) == 2:
            h["layout"] = gui.add_dropdown("compare", LAYOUTS, initial_value="split")
            h["split"] = gui.add_slider("split position", 0.0, 1.0, 0.01, 0.5)
            h["legend"] = gui.add_markdown(f"left: **{sources[0].label}**, right: "
                                           f"**{sources[1].label}**")
        h["home"] = gui.add_button("reset view", hint="back to the first training camera")
        h["cameras"] = gui.add_checkbox("training cameras", True,
                                        hint="frustums with their photos (click one to go "
                                             "there; its photo then hides the render)")
    b, c = sources[0].bound(), sources[0].box_center()
    start = CropBox.from_flat(viewer.config.crop)
    lo, hi = (start.lo, start.hi) if start is not None else (c - b, c + b)
    with gui.add_folder("Crop box", expand_by_default=start is not None):
        h["crop"] = gui.add_checkbox("crop", start is not None,
                                     hint="show only what lies inside the box (box units)")
        h["crop_min"] = gui.add_vector3("min", tuple(float(x) for x in lo), step=0.01)
        h["crop_max"] = gui.add_vector3("max", tuple(float(x) for x in hi), step=0.01)
        h["crop_flag"] = gui.add_text("command line", "", disabled=True,
                                      hint="the same crop for fieldkit export, render and "
                                           "distill (exports here apply it too)")

    def on_output(_):
        view.update_settings(output=h["output"].value)
        session.refresh_render_mode()

    def on_background(_):
        view.update_settings(background=tuple(c / 255 for c in h["background"].value))
        session.refresh_render_mode()

    def on_resolution(_):
        with view.lock:
            view.max_resolution = int(h["max_res"].value)
            view.preview_resolution = int(h["preview_res"].value)
            view.version += 1
        viewer.renderer.wake.set()

    def on_splat_mode(_):
        session.splats_in_browser = h["splat_mode"].value == "browser"
        session.refresh_render_mode()

    def on_layout(_):
        view.update_settings(layout=h["layout"].value, split=float(h["split"].value))
        viewer.renderer.wake.set()

    def on_crop(_):
        crop = None
        if h["crop"].value:
            lo, hi = h["crop_min"].value, h["crop_max"].value
            crop = CropBox(tuple(map(float, lo)), tuple(map(float, hi)))
        h["crop_flag"].value = "" if crop is None else "--crop " + " ".join(
            f"{v:.3g}" for v in crop.flat())
        view.update_settings(crop=crop)
        add_crop_outline(session.client.scene, crop)
        session.refresh_render_mode()

    def on_home(_):
        pos, target, fov = sources[0].home_pose()
        import numpy as np

        from fieldkit.export.paths import look_at

        c2w = look_at(np.asarray(pos), np.asarray(target), up=sources[0].up())
        session.set_camera(ViewCamera.from_c2w(c2w, fov, view.view.aspect if view.view else 1))

    h["output"].on_update(on_output)
    h["background"].on_update(on_background)
    h["max_res"].on_update(on_resolution)
    h["preview_res"].on_update(on_resolution)
    if "splat_mode" in h:
        h["splat_mode"].on_update(on_splat_mode)
    if "layout" in h:
        h["layout"].on_update(on_layout)
        h["split"].on_update(on_layout)
    for k in ("crop", "crop_min", "crop_max"):
        h[k].on_update(on_crop)
    if start is not None:
        on_crop(None)
    h["home"].on_click(on_home)

    def on_cameras(_):   # the frustums are shared by every browser
        viewer.frustums.update(shown=h["cameras"].value)

    h["cameras"].on_update(on_cameras)
