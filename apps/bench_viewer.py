"""Viewer benchmark: frame latency per model and resolution, and the training slowdown with a
connected browser.

    python apps/bench_viewer.py [--runs DIR] [--train-seconds 30] [--steps 150]
                                [--out apps/results/viewer_cpu.md]

1. Latency: for each model (hashgrid, triplane, mlp, splat rendered on the server) a demo run
   (trained here for --train-seconds unless DIR/demo-KIND exists) renders the first training
   view at 128 px (the preview while the camera moves), 256 and 512 px (long side): render,
   colour conversion, JPEG encoding and the depth PNG sent with it, as the viewer does per
   frame. Median of --repeats.
2. Slowdown: a hash-grid training of --steps steps on the demo scene, timed on the wall clock
   (a) without the viewer, (b) with the viewer and a headless Chromium client whose camera
   orbits continuously (previews all the time: the worst case), (c) with the client's camera
   still (refined frames and live refreshes), and with ``--pin`` (d) without the viewer while
   the same browser shows an idle viewer served by another process on the browser's core: the
   machine is as loaded as in (b, c) but training has no viewer. Modes are interleaved over
   --rounds rounds and reported as medians, with each run's wall time split into optimiser
   steps and the viewer's work between steps (this machine's speed drifts by 20% from minute
   to minute, so single runs say little).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("FIELDKIT_QUIET", "1")

from fieldkit.encoders.hashgrid_fast import wait_for_inference_compile  # noqa: E402
from fieldkit.export.paths import look_at  # noqa: E402
from fieldkit.train.config import TrainConfig  # noqa: E402
from fieldkit.viewer.camera import ViewCamera, cameras_to_view, view_to_cameras  # noqa: E402
from fieldkit.viewer.config import ViewerConfig  # noqa: E402

from stamp import command  # noqa: E402

DEMO = REPO / "scenes" / "demo"
KINDS = ("hashgrid", "triplane", "mlp", "splat")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def ensure_run(runs: Path, kind: str, seconds: float) -> Path:
    from fieldkit.train.run import train

    run = runs / f"demo-{kind}"
    if not (run / "model.safetensors").is_file():
        print(f"training {kind} for {seconds:.0f} s ...", flush=True)
        train(DEMO, kind, run, TrainConfig(max_time=seconds, eval_every=0))
    return run


def frame_seconds(source, view: ViewCamera, res: int, step_scale: float = 1.0) -> float:
    from fieldkit.viewer.frame import FrameJob, FrameSettings

    try:
        from viser._image_encoding import _encode_image_binary as encode
    except ImportError:  # viser missing or renamed: PIL's JPEG encoder
        from io import BytesIO

        from PIL import Image

        def encode(img, fmt, jpeg_quality=None):
            buf = BytesIO()
            Image.fromarray(img).save(buf, "JPEG", quality=jpeg_quality)
            return fmt, buf.getvalue()
    t0 = time.perf_counter()
    job = FrameJob([source], view_to_cameras(view, res), FrameSettings(
        background=source.background, step_scale=step_scale), key=None)
    while not job.done:
        job.run_piece()
    encode(job.image(), "jpeg", jpeg_quality=90)
    depth_png(job.view_depth())
    return time.perf_counter() - t0


def depth_png(depth) -> bytes:
    """The depth a frame is sent with (``Session.send_frame``: every k-th pixel), as viser
    encodes it (24-bit fixed point in a PNG)."""
    from fieldkit.viewer.server import DEPTH_SIDE

    step = -(-max(depth.shape[:2]) // DEPTH_SIDE)
    depth = np.ascontiguousarray(depth[::step, ::step])
    try:
        from viser._scene_api import cv2_imencode_with_fallback
    except ImportError:
        return b""
    fixed = np.clip(depth * 100_000, 0, 2**24 - 1).astype(np.uint32)   # viser's encoding
    return cv2_imencode_with_fallback("png", fixed.reshape(*depth.shape[:2], 1).view(np.uint8),
                                      jpeg_quality=None, channel_ordering="bgr")


def latency(runs: Path, seconds: float, repeats: int, kinds=KINDS) -> list[tuple]:
    from fieldkit.viewer.sources import Source

    rows = []
    for kind in kinds:
        run = ensure_run(runs, kind, seconds)
        t0 = time.perf_counter()
        source = Source.from_run(run)   # hash grids: compiled for CPU rendering in the background
        wait_for_inference_compile()
        ready = time.perf_counter() - t0
        view = cameras_to_view(source.cameras, 0)
        view = ViewCamera(view.wxyz, view.position, view.fov, 4 / 3)
        times = {}
        preview = ViewerConfig().preview_step_scale
        for name, res, scale in (("preview", 128, preview), (128, 128, 1.0), (256, 256, 1.0),
                                 (512, 512, 1.0)):
            frame_seconds(source, view, res, scale)  # warm-up
            times[name] = statistics.median(frame_seconds(source, view, res, scale)
                                            for _ in range(repeats))
        label = "splat (server)" if kind == "splat" else kind
        rows.append((label, times["preview"], times[128], times[256], times[512], ready))
        print(f"{label:15s} " + "  ".join(f"{r} {t * 1000:7.0f} ms" for r, t in times.items()),
              flush=True)
    return rows


PIN = False
"""--pin: training (1 thread) and the viewer server on core 0, the browser on core 1."""


def _pin_browser() -> None:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"chromium" in cmd or b"playwright" in cmd:
                os.sched_setaffinity(int(pid), {1})
        except (OSError, PermissionError):
            pass


def _chromium() -> str:
    """The browser binary; with --pin a wrapper that starts it on core 1 (every process it
    forks inherits that, unlike pinning the running browser, whose zygote escapes)."""
    exe = shutil.which("chromium")
    if not PIN:
        return exe
    wrapper = Path("/tmp/fieldkit-bench-chromium-core1")
    wrapper.write_text(f"#!/bin/sh\nexec taskset -c 1 {exe} \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper)


def _client(url: str, ready: threading.Event, stop: threading.Event) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        if PIN:  # the browser gets the other core, as if it ran on the user's machine
            _pin_browser()
        page = b.new_page(viewport={"width": 960, "height": 640})
        page.goto(url)
        ready.set()
        while not stop.is_set():
            time.sleep(0.1)
        b.close()


def _idle_viewer(run: Path, port: int = 7123):
    """``fieldkit view RUN`` in another process on core 1 (the browser's): (process, url)."""
    import socket
    import subprocess

    proc = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-m", "fieldkit.cli", "view",
                             str(run), "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    for _ in range(600):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the idle viewer did not start")


def timed_training(tmp: Path, steps: int, mode: str, idle_url: str | None = None) -> dict:
    """mode: none | browser (no viewer; the browser shows ``idle_url``) | moving | still."""
    from fieldkit.train.run import prepare
    from fieldkit.train.trainer import Trainer
    from fieldkit.viewer.config import ViewerConfig
    from fieldkit.viewer.live import LiveTraining

    run = tmp / f"train-{mode}"
    shutil.rmtree(run, ignore_errors=True)
    trainer = prepare(DEMO, "hashgrid", run, TrainConfig(max_steps=steps, eval_every=0,
                                                        checkpoint_every=1e9))
    step_time = [0.0]
    raw_step = Trainer.step.__get__(trainer)

    def timed_step():
        t = time.perf_counter()
        out = raw_step()
        step_time[0] += time.perf_counter() - t
        return out

    trainer.step = timed_step          # LiveTraining wraps this one: its work stays outside
    live = stop = client = None
    if mode == "browser":
        stop, ready = threading.Event(), threading.Event()
        client = threading.Thread(target=_client, args=(idle_url, ready, stop), daemon=True)
        client.start()
        ready.wait(60)
        time.sleep(3.0)                # the page loads its scene
    elif mode != "none":
        live = LiveTraining(trainer, ViewerConfig(port=0, verbose=False))
        stop, ready = threading.Event(), threading.Event()
        client = threading.Thread(target=_client, args=(live.viewer.url, ready, stop),
                                  daemon=True)
        client.start()
        ready.wait(60)
        live.viewer.wait_for_clients(1, 60)
        session = next(iter(live.viewer.sessions.values()))
        if mode == "moving":
            def orbit():
                a = 0.0
                while not stop.is_set():
                    a += 0.15
                    pos = np.array([3 * np.cos(a), 3 * np.sin(a), 1.5])
                    session.set_camera(ViewCamera.from_c2w(look_at(pos, np.zeros(3)), 0.8,
                                                           1.5))
                    time.sleep(0.1)
            threading.Thread(target=orbit, daemon=True).start()
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    out = {"wall": wall, "steps": trainer.step_count, "train": trainer.elapsed,
           "step_time": step_time[0], "render": 0.0, "frames": 0}
    if stop is not None and live is None:
        stop.set()
    if live is not None:
        out["render"] = live.budget.total
        out["frames"] = sum(s.view.frames_sent for s in live.viewer.sessions.values())
        stop.set()
        live.finish()
        live.viewer.stop()
    if client is not None:
        # the browser closes before the next run starts and before the interpreter exits: a
        # Playwright thread still closing at exit crashed the interpreter (segfault, rc 139)
        client.join(60)
    print(f"training ({mode:7s}): {steps} steps in {wall:.1f} s wall, steps "
          f"{out['step_time']:.1f} s" + (f", viewer rendering {out['render']:.1f} s, "
                                          f"{out['frames']} frames" if live else ""), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "bench_viewer")
    ap.add_argument("--train-seconds", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=1,
                    help="interleaved repetitions of the slowdown modes (medians reported)")
    ap.add_argument("--reuse-latency", action="store_true",
                    help="take the latency table from RUNS/latency.json (a previous run)")
    ap.add_argument("--latency-only", action="store_true",
                    help="measure the frame latency (into RUNS/latency.json) and stop")
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS),
                    help="the models of the latency table")
    ap.add_argument("--out", type=Path, default=REPO / "apps" / "results" / "viewer_cpu.md")
    ap.add_argument("--pin", action="store_true",
                    help="training and viewer on core 0 (1 torch thread), the browser on core 1: "
                         "the browser's software WebGL does not take training's CPU, as when it "
                         "runs on another machine")
    args = ap.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    if args.pin:
        global PIN
        PIN = True
        os.sched_setaffinity(0, {0})
        torch.set_num_threads(1)

    load0 = os.getloadavg()
    cache = args.runs / "latency.json"
    if args.reuse_latency and cache.is_file():
        rows = [tuple(r) for r in json.loads(cache.read_text())]
    else:
        rows = latency(args.runs, args.train_seconds, args.repeats, args.kinds)
        cache.write_text(json.dumps(rows))
    if args.latency_only:
        print(f"latency table in {cache}")
        return
    modes = ["none", "browser", "moving", "still"] if args.pin else ["none", "moving", "still"]
    idle = None
    if "browser" in modes:
        idle = _idle_viewer(ensure_run(args.runs, "hashgrid", args.train_seconds))
    results: dict[str, list[dict]] = {m: [] for m in modes}
    try:
        for _ in range(args.rounds):
            for m in modes:
                results[m].append(timed_training(args.runs, args.steps, m,
                                                 idle[1] if idle else None))
    finally:
        if idle is not None:
            idle[0].kill()
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
           for m, rs in results.items()}
    base = med["none"]

    cmd = f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')} {command()}"
    lines = [
        "# Viewer on the CPU: frame latency and training slowdown",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M')}",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"no GPU; torch {torch.__version__} with {torch.get_num_threads()} thread(s); "
        f"{platform.platform()}",
        f"- command: `{cmd}`",
        f"- load average (1/5/15 min) at start {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f}, at end "
        "{:.1f}/{:.1f}/{:.1f}: other processes shared the 2 cores".format(*os.getloadavg()),
        "- scene: built-in demo (96x96 training images); runs trained "
        f"{args.train_seconds:.0f} s each (`--max-time`)",
        "",
        "## Frame latency (render + colour + JPEG + depth PNG, median of "
        f"{args.repeats}, 4:3 view of the first training camera)",
        "",
        "| model | 128 px moving preview (steps x{:g}) | 128 px | 256 px | 512 px (refined) | "
        "load + compile |".format(ViewerConfig().preview_step_scale),
        "|---|---|---|---|---|---|",
    ]
    for label, p, a, b, c, *ready in rows:
        lines.append(f"| {label} | {p * 1000:.0f} ms | {a * 1000:.0f} ms | {b * 1000:.0f} ms | "
                     f"{c * 1000:.0f} ms | {ready[0] if ready else float('nan'):.1f} s |")
    lines += [
        "",
        "Targets: hashgrid preview (128 px) <= 150 ms, refined 512 px <= 2 s.",
        "",
        f"## Training slowdown (hashgrid, {args.steps} steps, wall clock, median of "
        f"{args.rounds} interleaved rounds)",
        "",
        "| training | wall | slowdown | optimiser steps | viewer work between steps | "
        "frames sent |",
        "|---|---|---|---|---|---|",
    ]
    names = {"none": "alone", "browser": "no viewer; browser shows another viewer",
             "moving": "viewer, browser camera orbiting", "still": "viewer, browser camera still"}
    for m in modes:
        r = med[m]
        between = r["wall"] - r["step_time"]
        slow = "-" if m == "none" else f"{100 * (r['wall'] / base['wall'] - 1):+.1f}%"
        lines.append(f"| {names[m]} | {r['wall']:.1f} s | {slow} | {r['step_time']:.1f} s | "
                     f"{between:.1f} s ({100 * between / r['wall']:.0f}%; rendering "
                     f"{r['render']:.1f} s) | {r['frames']:.0f} |")
    if "browser" in med:
        ref = med["browser"]
        lines += ["", "Against the browser-loaded baseline (what the viewer itself costs when "
                  "the browser's load is there either way): " + ", ".join(
                      f"{names[m]} {100 * (med[m]['wall'] / ref['wall'] - 1):+.1f}%"
                      for m in ("moving", "still"))]
    lines += ["", "Budget: the viewer renders between steps while its token bucket has credit; "
              "each optimiser step earns 15% of its duration (ViewerConfig.render_fraction), so "
              "the viewer's own work between steps stays near 15% of the training time (the "
              "'viewer work' column over the 'optimiser steps' column). A browser on the same "
              "machine comes on top: its CPU use slows the optimiser steps themselves (compare "
              "the first two rows)."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
