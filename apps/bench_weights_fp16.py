"""Benchmark: what float16 weights in model.safetensors cost (``--weights float16``).

    python apps/bench_weights_fp16.py RUN [RUN ...] [--out apps/results/weights_fp16/bench.md]

For each run: writes its model file with float32 and with float16 weights (occupancy grids
compacted either way: ``fieldkit/fields/compact.py``), loads both back, renders every test view
of its scene over white and reports the file sizes, PSNR against the photos for both, and the
PSNR of the float16 renders against the float32 ones.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fieldkit.data.scene import composite, load_scene  # noqa: E402
from fieldkit.fields.registry import load_model_file, save_model  # noqa: E402
from fieldkit.train.metrics import psnr  # noqa: E402
from fieldkit.train.run import load_model, read_config, scene_for_model  # noqa: E402

from stamp import command, machine  # noqa: E402


def measure(run: Path) -> dict:
    cfg = read_config(run)
    model = load_model(run).eval()
    scene = scene_for_model(load_scene(cfg["scene"], downscale=int(cfg.get("downscale", 1))),
                            model.kind)
    test = scene.split("test").tolist()
    white = torch.ones(3)
    gt = [composite(scene.image(i), white) for i in test]
    out: dict = {"run": str(run), "kind": model.kind, "views": len(test)}
    renders = {}
    with tempfile.TemporaryDirectory() as tmp:
        for weights in ("float32", "float16"):
            d = Path(tmp) / weights
            d.mkdir()
            path = save_model(model, d, weights)
            loaded = load_model_file(path).eval()
            with torch.no_grad():
                renders[weights] = [loaded.render(scene.cameras[i], white)["rgb"] for i in test]
            out[f"mib_{weights}"] = path.stat().st_size / 2**20
            out[f"psnr_{weights}"] = float(np.mean([float(psnr(r, g))
                                                    for r, g in zip(renders[weights], gt)]))
    out["fp16_vs_fp32"] = float(np.mean([float(psnr(a, b)) for a, b in
                                         zip(renders["float16"], renders["float32"])]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, default=REPO / "apps/results/weights_fp16/bench.md")
    args = ap.parse_args()
    rows = []
    for run in args.runs:
        r = measure(run)
        rows.append(r)
        print(r, flush=True)
    lines = ["# float16 weights in model files", "",
             f"- date: {time.strftime('%Y-%m-%d %H:%M')}",
             f"- machine: {machine()}",
             f"- command: `{command()}`",
             "- PSNR over white on every test view of each run's scene", "",
             "| run | kind | test views | MiB float32 | MiB float16 | PSNR float32 | "
             "PSNR float16 | float16 vs float32 renders |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['kind']} | {r['views']} | {r['mib_float32']:.2f} | "
                     f"{r['mib_float16']:.2f} | {r['psnr_float32']:.3f} | "
                     f"{r['psnr_float16']:.3f} | {r['fp16_vs_fp32']:.1f} dB |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
