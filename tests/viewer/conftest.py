"""Viewer test fixtures: tiny demo runs, a headless Chromium (Playwright), viewers on free ports."""
from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DEMO_SCENE

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 960, "height": 640}
SMALL_VIEWPORT = {"width": 560, "height": 400}


def _tiny_run(tmp_path_factory, kind: str, steps: int) -> Path:
    os.environ["FIELDKIT_CACHE"] = str(tmp_path_factory.getbasetemp() / "fieldkit-cache")
    from fieldkit.train.config import TrainConfig
    from fieldkit.train.run import train

    config = TrainConfig(max_steps=steps, eval_every=0, checkpoint_every=1e9, log_every=5,
                         init_rays=512)
    return train(DEMO_SCENE, kind, tmp_path_factory.mktemp(f"viewer-{kind}") / "run", config,
                 downscale=2, preset="fast").run_dir


@pytest.fixture(scope="session")
def tiny_hash_run(tmp_path_factory) -> Path:
    """A hash-grid run on the demo scene (48 px, fast preset, 60 steps: a few seconds)."""
    return _tiny_run(tmp_path_factory, "hashgrid", 60)


@pytest.fixture(scope="session")
def tiny_splat_run(tmp_path_factory) -> Path:
    """A splat run on the demo scene (48 px, fast preset, 30 steps)."""
    return _tiny_run(tmp_path_factory, "splat", 30)


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium through Playwright's sync API (skips without either)."""
    pytest.importorskip("viser", reason="viser is not installed (pip install 'fieldkit[viewer]')")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install playwright)")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


@contextmanager
def running_viewer(sources, **config):
    """A Viewer on a free port with its render thread; stopped afterwards."""
    from fieldkit.viewer.config import ViewerConfig
    from fieldkit.viewer.server import Viewer

    cfg = dict(port=0, verbose=False, max_resolution=160, preview_resolution=64,
               image_format="png", settle_seconds=0.2)
    cfg.update(config)
    viewer = Viewer(sources, ViewerConfig(**cfg))
    viewer.start_render_thread()
    try:
        yield viewer
    finally:
        viewer.stop()


def open_page(browser, url: str, viewer=None, n: int = 1, viewport=None):
    """A page on ``url``; waits until ``viewer`` has ``n`` clients. Splat scenes drawn by the
    browser's software WebGL are slow: give them a small ``viewport``."""
    page = browser.new_page(viewport=viewport or VIEWPORT)
    page.goto(url)
    if viewer is not None:
        assert viewer.wait_for_clients(n, 30), "the browser did not connect"
    return page


def wait_for(pred, timeout: float = 20.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def session_of(viewer, index: int = -1):
    return list(viewer.sessions.values())[index]


def wait_refined(viewer, session, timeout: float = 30.0) -> None:
    """Until the browser shows the refined frame of its current camera."""
    v = session.view

    def refined():
        with v.lock:
            return (v.job is None and v.shown_key == (v.version, v.max_resolution)
                    and time.monotonic() - v.moved_at > viewer.config.settle_seconds)

    wait_for(refined, timeout, "the refined frame")
    time.sleep(0.6)  # the browser decodes and draws it


def canvas_pixels(page) -> np.ndarray:
    """[H, W, 3] uint8 of the 3D canvas alone (GUI panel and notifications hidden), once it
    has stopped changing."""
    box = page.evaluate("""() => {
        const all = Array.from(document.querySelectorAll('canvas'));
        const c = all.reduce((a, b) => (b.width * b.height > a.width * a.height ? b : a));
        c.setAttribute('data-fk-main', '1');
        for (const el of document.body.querySelectorAll('*')) {
            if (el !== c && !el.contains(c) && !c.contains(el)) el.style.visibility = 'hidden';
        }
        const r = c.getBoundingClientRect();
        return {x: r.x, y: r.y, width: r.width, height: r.height};}""")
    # A clip of the page, not the element's own screenshot: that one first waits for the
    # canvas to keep its box over two animation frames, which a CPU-starved software WebGL
    # (the suite's other worker training) did not give within 30 s in CI. Instead, shots
    # until two in a row agree: a starved page was caught still drawing (half-faded splats).
    png, end = page.screenshot(clip=box, timeout=60_000), time.monotonic() + 60
    while time.monotonic() < end:
        page.wait_for_timeout(500)
        again = page.screenshot(clip=box, timeout=60_000)
        if np.abs(_rgb(again).astype(int) - _rgb(png).astype(int)).mean() < 0.5:
            break
        png = again
    page.evaluate("""() => { for (const el of document.body.querySelectorAll('*'))
        el.style.visibility = ''; }""")
    return _rgb(png)


def _rgb(png: bytes) -> np.ndarray:
    from io import BytesIO

    from PIL import Image

    return np.asarray(Image.open(BytesIO(png)).convert("RGB"))


def similarity(a: np.ndarray, b: np.ndarray, size: int = 48) -> tuple[float, float]:
    """(PSNR dB, Pearson correlation) of two uint8 images after area-resizing both to
    ``size`` px wide (robust to JPEG, resampling and sub-pixel offsets)."""
    from PIL import Image

    h = max(1, round(size * a.shape[0] / a.shape[1]))
    x = np.asarray(Image.fromarray(a).resize((size, h), Image.BOX), np.float64) / 255
    y = np.asarray(Image.fromarray(b).resize((size, h), Image.BOX), np.float64) / 255
    mse = float(((x - y) ** 2).mean())
    corr = float(np.corrcoef(x.ravel(), y.ravel())[0, 1])
    return -10 * np.log10(max(mse, 1e-10)), corr


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the GUI dropdown labelled ``label`` (a Mantine combobox)."""
    page.get_by_role("combobox", name=label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()


@contextmanager
def stepping(live):
    """Training steps in a background thread (the hooked step, as ``Trainer.train`` calls it)
    while the block runs; then ``live`` finishes and its viewer stops."""
    import threading

    stop = threading.Event()

    def train():
        while not stop.is_set():
            live.trainer.step()

    worker = threading.Thread(target=train, daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        live.paused = False
        worker.join(30)
        live.finish()
        live.viewer.stop()


def wait_live_frames(live, browser, timeout: float = 30.0):
    """A page on ``live``'s viewer once it shows a first frame and then one of a later step;
    returns (page, session)."""
    page = open_page(browser, live.viewer.url, live.viewer)
    s = session_of(live.viewer)
    wait_for(lambda: s.view.shown_image is not None, 30, "a first frame")
    first_model = s.view.shown_model
    wait_for(lambda: s.view.shown_model > first_model, timeout, "a frame of a later step")
    wait_for(lambda: "step" in page.locator("body").inner_text(), what="the stats")
    return page, s
