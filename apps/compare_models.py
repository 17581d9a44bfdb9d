"""Comparison: hashgrid, triplane and mlp trained with the same wall budget on the same scene.

    .venv/bin/python apps/compare_models.py --scene lego-400 --downscale 2 --max-time 300
    .venv/bin/python apps/compare_models.py --scene fox --downscale 8 --max-time 300

Each model is one ``apps/bench_train.py`` run (OUT/<model>/bench.json); the table (test PSNR and
SSIM, parameters, bytes on disk, training rays/s, render time of one test view) is printed and
written to OUT/compare.md. Models already benchmarked in OUT are reused unless --again.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import SCENES, bench  # noqa: E402
from stamp import command  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scene", default="lego-400")
    ap.add_argument("--models", nargs="+", default=["hashgrid", "triplane", "mlp"])
    ap.add_argument("--max-time", type=float, default=300.0)
    ap.add_argument("--downscale", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--test-every", type=int, default=1)
    ap.add_argument("--again", action="store_true", help="re-run models already in OUT")
    args = ap.parse_args()
    out = args.out or Path("apps/results") / f"compare_{args.scene}"
    rows = []
    for kind in args.models:
        path = out / kind / "bench.json"
        if args.again or not path.is_file():
            bench(SCENES / args.scene, kind, args.max_time, args.downscale, out / kind,
                  args.test_every)
        rows.append(json.loads(path.read_text()))
    r0 = rows[0]
    lines = [f"# {args.scene}: models at the same {args.max_time:g} s budget, {r0['resolution']}",
             "", f"- date: {r0['date']}", f"- machine: {r0['machine']}",
             f"- command: `{command()}`",
             f"- test views: {r0['test_views']}; trained on {r0['train_background']}, evaluated "
             f"on {r0['eval_background']}; per-model details in <model>/bench.md", "",
             "| model | test PSNR | test SSIM | parameters | bytes on disk | steps | train rays/s "
             "| render one view (s) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['test_psnr']:.2f} | {r['test_ssim']:.4f} | "
                     f"{r['num_params']:,} | {r['bytes_on_disk'] / 2**20:.2f} MiB | {r['steps']} | "
                     f"{r['rays_per_s']:,.0f} | {r['render_seconds_one_view']:.2f} |")
    (out / "compare.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
