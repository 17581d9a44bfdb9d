"""A web page export (``export splats RUN --out X.html``) opened from disk in headless Chromium
with the network cut: it asks for nothing outside the file and draws what fieldkit renders
from the page's first view. Skips without viser, playwright or chromium."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from tests.viewer.conftest import SMALL_VIEWPORT, canvas_pixels, similarity

pytest.importorskip("viser", reason="viser is not installed (pip install 'fieldkit[viewer]')")


def test_splat_page_draws_offline_what_fieldkit_renders(browser, tiny_splat_run, tmp_path):
    from fieldkit.export.paths import look_at
    from fieldkit.export.splats import export_splats
    from fieldkit.export.web_page import PageView
    from fieldkit.train.run import load_model
    from fieldkit.viewer.camera import ViewCamera, view_to_cameras

    out, _ = export_splats(tiny_splat_run, tmp_path / "scene.html")
    page = browser.new_page(viewport=SMALL_VIEWPORT)
    outside, logs = [], []
    page.on("console", lambda m: logs.append(m.text))

    def only_the_file(route):
        url = route.request.url
        if url.startswith(("file:", "blob:", "data:")):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    page.route("**/*", only_the_file)
    page.goto(out.resolve().as_uri())
    end = time.monotonic() + 30
    while time.monotonic() < end and not any("Embedded data loaded" in t for t in logs):
        page.wait_for_timeout(100)      # (Playwright delivers events while it waits)
    assert any("Embedded data loaded" in t for t in logs), logs[-5:]
    page.wait_for_timeout(4000)         # software WebGL sorts and draws the splats
    shot = canvas_pixels(page)
    page.close()
    assert not outside, f"the page asked the network for {outside[:3]}"

    # fieldkit's own render of the page's first view: eye, orbit centre, +z up, vertical fov
    view = PageView.of_run(tiny_splat_run)
    c2w = look_at(view.position, view.look_at, view.up)
    cam = ViewCamera.from_c2w(c2w, view.fov, shot.shape[1] / shot.shape[0])
    model = load_model(tiny_splat_run).eval()
    with torch.no_grad():
        rgb = model.render(view_to_cameras(cam, 160), torch.tensor(view.background))["rgb"]
    expected = (rgb.clamp(0, 1).numpy() * 255).astype(np.uint8)
    psnr, corr = similarity(shot, expected)
    print(f"page vs fieldkit's render: {psnr:.2f} dB, correlation {corr:.3f}")
    assert psnr > 20 and corr > 0.9, (psnr, corr)    # measured 24.5 dB, 0.977
    # the floor means something: the same render from the opposite side matches worse
    back = ViewCamera.from_c2w(look_at(2 * view.look_at - view.position, view.look_at, view.up),
                               view.fov, cam.aspect)
    with torch.no_grad():
        other = model.render(view_to_cameras(back, 160), torch.tensor(view.background))["rgb"]
    psnr_other, _ = similarity(shot, (other.clamp(0, 1).numpy() * 255).astype(np.uint8))
    print(f"from the opposite side: {psnr_other:.2f} dB")
    assert psnr_other < psnr - 1, (psnr_other, psnr)


def test_a_page_opened_from_disk_sorts_its_splats(browser, tmp_path):
    """Two half-transparent discs, the red one in front but first in the file: blended back
    to front (viser's sorter, a module worker) red dominates the centre; in file order, as
    viser draws them until its sorter answers, blue would."""
    from fieldkit.encoders.sh import C0
    from fieldkit.export.web_page import PageView, splats_page

    colour = torch.tensor([[1.0, 0.1, 0.1], [0.1, 0.1, 1.0]])
    params = {"means": torch.tensor([[0.0, -0.3, 0.0], [0.0, 0.3, 0.0]]),
              "scales": torch.log(torch.tensor([[0.6, 0.01, 0.6]] * 2)),
              "quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 2),
              "opacities": torch.zeros(2),                       # alpha 0.5 at the centre
              "sh0": ((colour - 0.5) / C0)[:, None], "shN": torch.zeros(2, 0, 3)}
    view = PageView(position=np.array([0.0, -3.0, 0.0]), look_at=np.zeros(3),
                    up=np.array([0.0, 0.0, 1.0]), fov=0.8, background=(1.0, 1.0, 1.0))
    out = splats_page(tmp_path / "discs.html", params, view, "discs")
    page = browser.new_page(viewport=SMALL_VIEWPORT)
    page.goto(out.resolve().as_uri())
    page.wait_for_timeout(6000)
    shot = canvas_pixels(page).astype(int)
    page.close()
    h, w = shot.shape[:2]
    centre = shot[h // 2 - 10:h // 2 + 10, w // 2 - 10:w // 2 + 10].reshape(-1, 3).mean(0)
    # sorted: (198, 83, 141) over white; in file order: (141, 83, 197)
    assert centre[0] > centre[2] + 30, centre
