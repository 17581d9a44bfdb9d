"""Benchmark: a splat run written as each web viewer's file, size and fidelity.

    .venv/bin/python apps/bench_web_formats.py --run runs/lego_splat/run \
        --out apps/results/web_formats_cpu

For each format (.ply, .spz, .compressed.ply, .splat): `fieldkit export splats` wall time,
bytes on disk, time to read it back, and the Gaussians read back rendered at the run's test
views: PSNR against the run's own renders (what the format loses) and against the photos.
Expected before the run (from the demo's 10.9k Gaussians): .spz about a tenth of the .ply and
above 40 dB against the run; the compressed .ply about a quarter and higher; .splat about an
eighth and lowest (no view-dependent colour). The .spz is also written with the reference
library's SH bits (5 of degree 1, 4 above) and with all 8, beside the export's default.

Then the .spz with export's filters (`--min-opacity`, `--max-sh-degree`). Expected before the
run: on lego, a third of the Gaussians are below 0.05 opacity; leaving them out saves about a
third of the file for a few hundredths of a dB against the photos; degree 1 instead of 3
halves the .spz and costs a few tenths of a dB (the view-dependent colour is what the SH bits
study found the .spz's only loss to be).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fieldkit.data.normalize import Normalisation
from fieldkit.data.scene import composite
from fieldkit.export.splats import FORMATS, SplatFilter, export_splats
from fieldkit.splats.foreign import read_splats
from fieldkit.splats.model import SplatModel
from fieldkit.splats.spz import write_spz
from fieldkit.splats.transform import splats_to_box, splats_to_world
from fieldkit.train.metrics import psnr
from fieldkit.train.rays import BACKGROUNDS
from fieldkit.train.run import load_model, load_run_scene, read_config

from stamp import stamp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--views", type=int, default=20, help="test views, evenly spaced")
    ap.add_argument("--out", type=Path, default=Path("apps/results/web_formats_cpu"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model, scene = load_model(args.run), load_run_scene(args.run)
    background = read_config(args.run)["train"]["background"]
    bg = torch.tensor(BACKGROUNDS["white" if background == "random" else background])
    test = scene.split("test")
    ids = [int(test[round(i * (len(test) - 1) / max(args.views - 1, 1))])
           for i in range(min(args.views, len(test)))]
    with torch.no_grad():
        own = {i: model.render(scene.cameras[i], bg)["rgb"] for i in ids}
    photos = {i: composite(scene.image(i), bg) for i in ids}
    rows = []
    variants = [(fmt, fmt, {}) for fmt in FORMATS] + [
        (".spz", ".spz, SH bits 5/4 (the reference library's)", {"sh_bits": (5, 4)}),
        (".spz", ".spz, SH bits 8", {"sh_bits": (8, 8)})] + [
        (".spz", f".spz, {label}", {"keep": keep}) for label, keep in (
            ("--min-opacity 0.02", SplatFilter(min_opacity=0.02)),
            ("--min-opacity 0.05", SplatFilter(min_opacity=0.05)),
            ("--min-opacity 0.1", SplatFilter(min_opacity=0.1)),
            ("--max-sh-degree 1", SplatFilter(max_sh_degree=1)),
            ("--max-sh-degree 0", SplatFilter(max_sh_degree=0)),
            ("--min-opacity 0.05 --max-sh-degree 1",
             SplatFilter(min_opacity=0.05, max_sh_degree=1)))]
    norm = Normalisation.from_dict(read_config(args.run)["normalisation"])
    for fmt, label, options in variants:
        path = args.out / f"splats{fmt}"
        t0 = time.perf_counter()
        if "keep" in options:
            export_splats(args.run, path, keep=options["keep"])
        elif options:   # the same Gaussians in world units, written with other settings
            write_spz(path, splats_to_world(model.export_params(), norm), **options)
        else:
            export_splats(args.run, path)
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        params = read_splats(path)
        t_read = time.perf_counter() - t0
        back = SplatModel(model.config)
        back.set_gaussians(splats_to_box(params, scene.normalisation))
        with torch.no_grad():
            renders = {i: back.render(scene.cameras[i], bg)["rgb"] for i in ids}
        vs_run = [min(float(psnr(renders[i], own[i])), 99.0) for i in ids]  # 99: identical
        vs_photos = [float(psnr(renders[i], photos[i])) for i in ids]
        rows.append({"format": label, "bytes": path.stat().st_size, "gaussians": len(params["means"]),
                     "write_s": t_write, "read_s": t_read,
                     "psnr_vs_run_mean": sum(vs_run) / len(vs_run), "psnr_vs_run_min": min(vs_run),
                     "psnr_vs_photos": sum(vs_photos) / len(vs_photos)})
        path.unlink()
    ply = rows[0]["bytes"]
    meta = stamp()
    lines = [f"# A splat run as web viewers' files: {args.run}", "",
             f"- date: {meta['date']}",
             f"- machine: {meta['machine']}", f"- command: `{meta['command']}`",
             f"- {model.num_gaussians:,} Gaussians, SH degree {model.config.sh_degree}; "
             f"{len(ids)} test views; the run itself renders them at "
             f"{sum(float(psnr(own[i], photos[i])) for i in ids) / len(ids):.2f} dB vs the photos",
             "", "| file | MiB | of the .ply | export s | read s | Gaussians read | "
             "vs the run, mean (worst) dB | vs photos dB |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['format']} | {r['bytes'] / 2 ** 20:.2f} | {r['bytes'] / ply:.3f} | "
                     f"{r['write_s']:.2f} | {r['read_s']:.2f} | {r['gaussians']:,} | "
                     f"{r['psnr_vs_run_mean']:.2f} ({r['psnr_vs_run_min']:.2f}) | "
                     f"{r['psnr_vs_photos']:.2f} |")
    (args.out / "bench.json").write_text(json.dumps(rows, indent=1))
    (args.out / "bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
