"""Benchmark: runs exported as self-contained web pages (`--out X.html`): time, size, and what
the browser draws against fieldkit's own render of the page's first view.

    .venv/bin/python apps/bench_web_page.py --splat-run runs/lego_splat \
        --field-run runs/lego_hash --out apps/results/web_page_cpu

For the splat run: `fieldkit export splats RUN --out X.html` (wall time, bytes), then the page
opened from disk in headless Chromium (software WebGL, the network cut) and its canvas compared
with fieldkit's render of the same view at the same size, with every SH band and with the base
colour alone (what the page draws). For the field run: `export mesh --out X.html` (marching
cubes, 256) and `export points --out X.html` (the default 1M points), time and bytes.

Expected before the run: the splat page about 0.8 MiB (viser's client) plus 32 bytes a
Gaussian before compression; against fieldkit's base-colour render above 30 dB (the page
quantises colours to 8 bits and covariances to 16-bit floats, and sorts by centre depth as
fieldkit does); against the full-SH render lower by what the view-dependent colour adds.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shutil
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import torch

from fieldkit.export.paths import look_at
from fieldkit.export.run import export_run
from fieldkit.export.web_page import PageView
from fieldkit.train.run import load_model
from fieldkit.viewer.camera import ViewCamera, view_to_cameras

from stamp import machine

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def page_canvas(page_file: Path, size: int, settle: float) -> np.ndarray:
    """[H, W, 3] uint8 of the page's 3D canvas, opened from disk with the network cut."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": size, "height": size})
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(
            ("file:", "blob:", "data:")) else r.abort())
        page.goto(page_file.resolve().as_uri())
        page.wait_for_timeout(settle * 1000)
        page.evaluate("""() => {
            const all = Array.from(document.querySelectorAll('canvas'));
            const c = all.reduce((a, b) => (b.width * b.height > a.width * a.height ? b : a));
            c.setAttribute('data-fk-main', '1');
            for (const el of document.body.querySelectorAll('*'))
                if (el !== c && !el.contains(c) && !c.contains(el)) el.style.visibility = 'hidden';
        }""")
        png = page.locator("canvas[data-fk-main]").screenshot()
        browser.close()
    return np.asarray(Image.open(BytesIO(png)).convert("RGB"))


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()) / 255 ** 2
    return -10 * np.log10(max(mse, 1e-12))


def splat_page(run: Path, out: Path, size: int, settle: float) -> dict:
    t = time.perf_counter()
    path, summary = export_run("splats", run, out / "splats.html")
    seconds = time.perf_counter() - t
    shot = page_canvas(path, size, settle)
    view = PageView.of_run(run)
    cam = ViewCamera.from_c2w(look_at(view.position, view.look_at, view.up), view.fov,
                              shot.shape[1] / shot.shape[0])
    camera = view_to_cameras(cam, max(shot.shape[:2]))
    model = load_model(run).eval()
    bg = torch.tensor(view.background)
    renders = {}
    with torch.no_grad():
        renders["all SH bands"] = model.render(camera, bg)["rgb"]
        model.active_sh_degree = 0
        renders["base colour"] = model.render(camera, bg)["rgb"]
    from PIL import Image

    Image.fromarray(shot).save(out / "splats_page.png")
    row = {"file": str(path), "summary": summary, "export_s": round(seconds, 2),
           "bytes": path.stat().st_size, "gaussians": model.num_gaussians,
           "canvas": list(shot.shape[:2])}
    for name, rgb in renders.items():
        img = (rgb.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
        Image.fromarray(img).save(out / f"splats_render_{name.split()[0]}.png")
        row[f"psnr vs fieldkit ({name})"] = round(psnr_u8(shot, img), 2)
    return row


def field_pages(run: Path, out: Path) -> list[dict]:
    rows = []
    for kind, kw in (("mesh", {"resolution": 256}), ("points", {})):
        t = time.perf_counter()
        path, summary = export_run(kind, run, out / f"{kind}.html", **kw)
        rows.append({"kind": kind, "summary": summary,
                     "export_s": round(time.perf_counter() - t, 2),
                     "bytes": path.stat().st_size})
        path.unlink()   # large; the numbers are kept
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--splat-run", type=Path, required=True)
    ap.add_argument("--field-run", type=Path)
    ap.add_argument("--size", type=int, default=400, help="browser viewport, pixels a side")
    ap.add_argument("--settle", type=float, default=15.0, help="seconds before the screenshot")
    ap.add_argument("--out", type=Path, default=Path("apps/results/web_page_cpu"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"date": datetime.date.today().isoformat(),
              "machine": machine(),
              "splats": splat_page(args.splat_run, args.out, args.size, args.settle)}
    (args.out / "splats.html").unlink()
    if args.field_run is not None:
        result["fields"] = field_pages(args.field_run, args.out)
    (args.out / "bench.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
