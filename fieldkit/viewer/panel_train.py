"""GUI panel "Training": step, loss, PSNR, rays/s, ETA, pause/resume and the render budget."""
from __future__ import annotations


def build_train_panel(session, live) -> None:
    gui, h = session.client.gui, session.handles
    with gui.add_folder("Training"):
        h["train_stats"] = gui.add_markdown(live.stats_text())
        h["pause"] = gui.add_button("resume training" if live.paused else "pause training",
                                    disabled=live.finished)
        h["render_share"] = gui.add_slider(
            "render budget", 0.05, 0.5, 0.01, live.config.render_fraction,
            hint="most of the wall time spent rendering the view while training")

    def on_pause(_):
        live.paused = not live.paused
        for s in list(session.viewer.sessions.values()):
            b = s.handles.get("pause")
            if b is not None:
                b.label = "resume training" if live.paused else "pause training"
        live.viewer.renderer.wake.set()

    def on_share(_):
        live.config.render_fraction = float(h["render_share"].value)

    h["pause"].on_click(on_pause)
    h["render_share"].on_update(on_share)
