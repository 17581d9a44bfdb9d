"""The viewer in a real browser (headless Chromium): pixels, GUI controls, camera paths,
exports, several clients, the token gate. Skips without viser, playwright or chromium."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from tests.viewer.conftest import (canvas_pixels, choose, open_page, running_viewer, session_of,
                                   similarity, stepping, wait_for, wait_live_frames,
                                   wait_refined)

pytest.importorskip("viser", reason="viser is not installed (pip install 'fieldkit[viewer]')")


def _sources(*runs):
    from fieldkit.viewer.server import open_sources

    return open_sources(*runs)


def _training_view(source, i: int, aspect: float):
    from fieldkit.viewer.camera import ViewCamera, cameras_to_view

    v = cameras_to_view(source.cameras, i)
    return ViewCamera(v.wxyz, v.position, v.fov, aspect)


def test_page_matches_server_render_and_depth_changes_it(browser, tiny_hash_run):
    from fieldkit.viewer.camera import view_to_cameras
    from fieldkit.viewer.frame import to_image

    sources = _sources(tiny_hash_run)
    with running_viewer(sources, max_frustums=0) as viewer:
        page = open_page(browser, viewer.url, viewer)
        s = session_of(viewer)
        # the GUI controls exist
        text = page.locator("body").inner_text()
        for label in ("output", "background", "max resolution", "preview resolution",
                      "Crop box", "Camera path", "Export"):
            assert label in text, label
        s.set_camera(_training_view(sources[0], 3, s.view.view.aspect))
        wait_for(lambda: s.view.view is not None and np.allclose(
            s.view.view.position, sources[0].cameras.positions[3].numpy(), atol=1e-3),
                 what="the browser camera to follow the server")
        wait_refined(viewer, s)
        shot = canvas_pixels(page)
        assert shot.std() > 5, "the canvas is blank"
        # what the server renders for the camera the browser reports
        cam = view_to_cameras(s.view.view, viewer.config.max_resolution)
        out = sources[0].render(cam, torch.tensor(sources[0].background))
        expected = to_image(out["rgb"].numpy(), out["depth"].numpy(), out["alpha"].numpy(), "rgb")
        psnr, corr = similarity(shot, expected)
        assert psnr > 20 and corr > 0.9, (psnr, corr)
        # a wrong camera would not match: the floor is meaningful
        other = sources[0].render(view_to_cameras(_training_view(sources[0], 9, s.view.view.aspect),
                                                  160), torch.tensor(sources[0].background))
        psnr_other, _ = similarity(shot, to_image(other["rgb"].numpy(), None, None, "rgb"))
        assert psnr_other < psnr

        # switch the output to depth in the browser: the picture changes to the depth map
        choose(page, "output", "depth")
        wait_for(lambda: s.view.settings.output == "depth", what="the output setting")
        wait_refined(viewer, s)
        depth_shot = canvas_pixels(page)
        assert similarity(depth_shot, shot)[0] < psnr - 3
        d = to_image(out["rgb"].numpy(), out["depth"].numpy(), out["alpha"].numpy(), "depth")
        assert similarity(depth_shot, d)[1] > 0.8
        page.close()


def test_camera_path_add_save_load(browser, tiny_hash_run):
    from fieldkit.export.paths import load_path_json
    from fieldkit.viewer.keyframes import CameraPath

    sources = _sources(tiny_hash_run)
    with running_viewer(sources, max_frustums=0) as viewer:
        page = open_page(browser, viewer.url, viewer)
        s = session_of(viewer)
        page.get_by_text("Camera path", exact=True).click()
        add = page.get_by_role("button", name="add keyframe")
        for i in (0, 4, 8):
            s.set_camera(_training_view(sources[0], i, s.view.view.aspect))
            wait_for(lambda i=i: np.allclose(s.view.view.position,
                                             sources[0].cameras.positions[i].numpy(), atol=1e-3),
                     what="camera")
            add.click()
            wait_for(lambda i=i: len(s.path.keyframes) == i // 4 + 1, what="a keyframe")
        page.get_by_role("button", name="delete keyframe").click()   # the selected: the last
        wait_for(lambda: len(s.path.keyframes) == 2, what="the deletion")
        page.get_by_role("button", name="save path").click()
        out = viewer.output_dir / "paths" / "camera_path.json"
        wait_for(out.is_file, what="the saved path")
        # the renderer reads it: one camera per video frame, through the keyframes
        cams = load_path_json(out, sources[0].cameras)
        assert len(cams) == s.path.num_frames == 120
        assert np.allclose(cams.c2w[0].numpy(), s.path.keyframes[0].c2w, atol=1e-5)
        assert np.allclose(cams.c2w[-1].numpy(), s.path.keyframes[1].c2w, atol=1e-5)
        # load it back after changing the path in memory
        s.path.keyframes.clear()
        page.get_by_role("button", name="load path", exact=True).click()
        wait_for(lambda: len(s.path.keyframes) == 2, what="the loaded path")
        assert np.allclose(CameraPath.load(out).keyframes[1].c2w, s.path.keyframes[1].c2w)
        page.close()


def test_export_button_writes_file_and_applies_the_crop_box(browser, tiny_splat_run):
    """The viewer starts cropped (``--crop``): the export holds the Gaussians inside, the
    panel shows the flag; with the box off, the next export holds them all."""
    # server-side splats: software WebGL splats make a headless page too slow to click
    sources = _sources(tiny_splat_run)
    with running_viewer(sources, max_frustums=0, splats_in_browser=False,
                        crop=(0, -1, -1, 1, 1, 1)) as viewer:
        page = open_page(browser, viewer.url, viewer)
        s = session_of(viewer)
        assert s.handles["crop_flag"].value == "--crop 0 -1 -1 1 1 1"
        assert s.view.settings.crop is not None
        page.get_by_text("Export", exact=True).click()
        page.get_by_role("button", name="export splats").click()
        out = viewer.output_dir / "exports" / "splats.ply"
        wait_for(lambda: "wrote" in s.handles["export_status"].content, 30, "the export")
        from fieldkit.splats.ply import read_splat_ply
        from fieldkit.splats.spz import read_spz

        from fieldkit.render.crop import CropBox

        box = CropBox((0, -1, -1), (1, 1, 1))
        inside = int(box.inside(sources[0].model.params["means"]).sum())
        assert 0 < inside < sources[0].model.num_gaussians
        assert len(read_splat_ply(out)["means"]) == inside
        s.handles["crop"].value = False
        wait_for(lambda: s.view.settings.crop is None, what="the crop box off")
        s.handles["splat_file"].value = ".spz"   # the web viewers' file, from the same button
        s.handles["export_status"].content = ""
        page.get_by_role("button", name="export splats").click()
        spz = viewer.output_dir / "exports" / "splats.spz"
        wait_for(lambda: "wrote" in s.handles["export_status"].content, 30, "the .spz export")
        assert len(read_spz(spz)["means"]) == sources[0].model.num_gaussians
        s.handles["splat_file"].value = ".html"  # a web page of them, from the same button
        s.handles["export_status"].content = ""
        page.get_by_role("button", name="export splats").click()
        wait_for(lambda: "wrote" in s.handles["export_status"].content, 30, "the page export")
        html = (viewer.output_dir / "exports" / "splats.html").read_text(encoding="utf-8")
        assert "__VISER_EMBED_DATA__" in html and f"<title>{tiny_splat_run.name}<" in html
        page.close()


def test_two_clients_and_compare(browser, tiny_hash_run, tiny_splat_run):
    sources = _sources(tiny_hash_run, tiny_splat_run)
    with running_viewer(sources, max_frustums=0, max_resolution=96) as viewer:
        a = open_page(browser, viewer.url, viewer, 1)
        b = open_page(browser, viewer.url, viewer, 2)
        sa, sb = session_of(viewer, 0), session_of(viewer, 1)
        for s in (sa, sb):
            wait_refined(viewer, s)
            img = s.view.shown_image
            assert img.std() > 5
            # split layout: the divider line is drawn at the split position
            x = img.shape[1] // 2
            assert (img[:, x - 1] == (255, 64, 0)).all()
        assert canvas_pixels(a).std() > 5 and canvas_pixels(b).std() > 5
        sent_b = sb.view.frames_sent
        sa.set_camera(_training_view(sources[0], 5, sa.view.view.aspect))
        wait_for(lambda: sa.view.shown_key is not None and sa.view.shown_key[0] == sa.view.version
                 and sa.view.shown_key[1] == 96, what="client A's new frame")
        assert sb.view.frames_sent == sent_b, "client B re-rendered for client A's camera"
        a.close()
        b.close()


def test_first_view_is_the_render_not_its_cameras_photo(browser, tiny_hash_run):
    """The view opens at training camera 0: that frustum has no photo (it would fill the view
    in front of the render); the others do, and the "training cameras" box hides them all."""
    sources = _sources(tiny_hash_run)
    with running_viewer(sources, max_frustums=8) as viewer:
        page = open_page(browser, viewer.url, viewer)
        s = session_of(viewer)
        wait_for(lambda: len(viewer.frustums) > 1, what="the frustums")
        assert viewer.frustums[0].name == "/cameras/0000" and viewer.frustums[0].image is None
        assert all(f.image is not None for f in viewer.frustums[1:])
        # over black, the render is dark where camera 0's photo (over white) would be bright:
        # the middle of the page shows the render
        s.handles["background"].value = (0, 0, 0)
        wait_for(lambda: s.view.settings.background == (0.0, 0.0, 0.0), what="black")
        wait_refined(viewer, s)
        time.sleep(1.0)   # the browser draws the last frame
        shot = canvas_pixels(page)
        h, w = shot.shape[:2]
        middle = shot[h // 4:3 * h // 4, w // 4:3 * w // 4].astype(float)
        assert abs(middle.mean() - s.view.shown_image.mean()) < 25, (middle.mean(),
                                                                     s.view.shown_image.mean())
        s.handles["cameras"].value = False
        wait_for(lambda: not any(f.visible for f in viewer.frustums), what="hidden frustums")
        page.close()


def test_token_gate(browser, tiny_splat_run):
    sources = _sources(tiny_splat_run)
    with running_viewer(sources, max_frustums=0, token="s3cret-t0ken") as viewer:
        page = browser.new_page()
        bare = viewer.url.split("?")[0]
        response = page.goto(bare)
        assert response.status == 401 and "access token" in page.content()
        assert not viewer.wait_for_clients(1, 2)
        response = page.goto(bare + "?token=wrong")
        assert response.status == 401
        response = page.goto(viewer.url)
        assert response.status == 200
        assert viewer.wait_for_clients(1, 30)
        page.close()


def test_ply_file_rendered_by_server_and_browser(browser, tiny_splat_run, tmp_path):
    from fieldkit.export.splats import export_splats

    ply, n = export_splats(tiny_splat_run, tmp_path / "scene.ply")
    sources = _sources(ply)
    assert sources[0].model.num_gaussians == n
    with running_viewer(sources, splats_in_browser=False) as viewer:
        page = open_page(browser, viewer.url, viewer)
        s = session_of(viewer)
        wait_refined(viewer, s)
        assert s.view.shown_image.std() > 5
        assert canvas_pixels(page).std() > 5
        choose(page, "splats drawn by", "browser")   # viser's WebGL splats
        wait_for(lambda: s.splat_node is not None and not s.view.server_render,
                 what="browser splats")
        page.close()


def test_live_training_view_advances(browser, tmp_path):
    from fieldkit.train.config import TrainConfig
    from fieldkit.train.run import prepare
    from fieldkit.viewer.config import ViewerConfig
    from fieldkit.viewer.live import LiveTraining
    from tests.conftest import DEMO_SCENE

    trainer = prepare(DEMO_SCENE, "hashgrid", tmp_path / "run", TrainConfig(
        max_steps=10_000, eval_every=0, checkpoint_every=1e9, init_rays=512), downscale=2,
        preset="fast")
    live = LiveTraining(trainer, ViewerConfig(port=0, verbose=False, max_resolution=96,
                                              train_resolution=96, preview_resolution=48,
                                              live_refresh_seconds=0.5, stats_seconds=0.3,
                                              max_frustums=8, render_fraction=0.3))
    with stepping(live):
        page, s = wait_live_frames(live, browser)
        assert "rays/s" in page.locator("body").inner_text()
        page.get_by_role("button", name="pause training").click()
        wait_for(lambda: live.paused, what="pause")
        time.sleep(0.5)
        paused_at = trainer.step_count
        time.sleep(1.0)
        assert trainer.step_count <= paused_at + 1
        page.get_by_role("button", name="resume training").click()
        wait_for(lambda: trainer.step_count > paused_at + 2, 30, "training to resume")
        page.close()


def test_live_distillation_shows_the_student_beside_its_teacher(browser, tiny_hash_run,
                                                                 tmp_path):
    """``fieldkit distill --viewer``: the student trains live on the left, its teacher is on the
    right, both in the student's box; the report follows."""
    from fieldkit.distill.config import DistillConfig
    from fieldkit.distill.run import Distillation
    from fieldkit.train.config import TrainConfig
    from fieldkit.viewer.config import ViewerConfig
    from fieldkit.viewer.live import LiveTraining
    from fieldkit.viewer.sources import Source

    job = Distillation(tiny_hash_run, "triplane", tmp_path / "student", TrainConfig(
        max_steps=10_000, eval_every=0, checkpoint_every=1e9), DistillConfig(
        bank_views=20, bank_rays=1 << 13, held_out_views=2, gt_views=0), preset="fast")
    sources = Source.from_distillation(job)
    assert [s.label for s in sources] == ["student (student)", "run (teacher)"]
    assert sources[0].model is job.student and sources[1].model is job.teacher.model
    assert sources[0].normalisation is sources[1].normalisation is job.normalisation
    live = LiveTraining(job.trainer, ViewerConfig(port=0, verbose=False, max_resolution=96,
                                                  train_resolution=96, preview_resolution=48,
                                                  live_refresh_seconds=0.5, stats_seconds=0.3,
                                                  max_frustums=0, render_fraction=0.3),
                        sources)
    with stepping(live):
        page, s = wait_live_frames(live, browser, 60)
        text = page.locator("body").inner_text()
        assert "student (student)" in text and "run (teacher)" in text
        img = s.view.shown_image
        x = img.shape[1] // 2
        assert (img[:, x - 1] == (255, 64, 0)).all()   # the split's divider
        assert canvas_pixels(page).std() > 5
    steps = job.trainer.step_count
    assert steps > 2
    report = job.report({"interrupted": False}, quiet=True)
    assert report["student"]["steps"] == steps and report["vs_teacher"]["psnr"] > 10
    assert (tmp_path / "student" / "distill.json").is_file()


def test_distill_with_viewer_runs_the_whole_distillation(tiny_hash_run, tmp_path):
    """What `fieldkit distill --viewer` calls: the budget runs out, the report is written, and
    the viewer keeps serving the finished student beside its teacher until stopped."""
    from fieldkit.distill.config import DistillConfig
    from fieldkit.train.config import TrainConfig
    from fieldkit.viewer.config import ViewerConfig
    from fieldkit.viewer.live import distill_with_viewer

    report, live = distill_with_viewer(
        ViewerConfig(port=0, verbose=False, max_frustums=0), quiet=True,
        teacher_run=tiny_hash_run, kind="mlp", out=tmp_path / "student",
        train=TrainConfig(max_steps=20, eval_every=0, checkpoint_every=1e9),
        config=DistillConfig(bank_views=20, bank_rays=1 << 12, held_out_views=2, gt_views=0),
        preset="fast")
    try:
        assert report["student"]["steps"] == 20 and live.finished
        assert (tmp_path / "student" / "distill.json").is_file()
        assert [s.kind for s in live.viewer.sources] == ["mlp", "hashgrid"]
        from urllib.request import urlopen
        with urlopen(live.viewer.url, timeout=10) as page:   # serving after training
            assert page.status == 200
    finally:
        live.viewer.stop()
