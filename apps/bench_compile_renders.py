"""Hash-grid view renders on the CPU, eager against compiled (``compile_if_it_pays``).

For each run: the compilation's time, then every picked test view rendered eagerly and
compiled in turn (the compiled path switched off and on between renders), and the medians.

    python apps/bench_compile_renders.py --runs RUN [RUN ...] --views 12 --out FILE.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from fieldkit.encoders import hashgrid_fast
from fieldkit.encoders.hashgrid import HashGrid
from fieldkit.train.run import load_model, load_run_scene


def bench(run: Path, n_views: int) -> dict:
    model = load_model(run).eval()
    scene = load_run_scene(run)
    test = scene.split("test")
    pick = test[torch.linspace(0, len(test) - 1, min(n_views, len(test))).round().long()]
    black = torch.zeros(3)
    grids = [m for m in model.modules() if isinstance(m, HashGrid)]
    keys = [hashgrid_fast._layout(g) for g in grids]
    with torch.no_grad():
        model.render(scene.cameras[int(pick[0])], black)          # warm caches
        t0 = time.perf_counter()
        hashgrid_fast.compile_for_inference(model)
        compile_s = time.perf_counter() - t0
        times = {"eager": [], "compiled": []}
        for i in pick.tolist():
            for mode in ("eager", "compiled"):
                for k in keys:
                    hashgrid_fast._INFER_READY[k] = mode == "compiled"
                t0 = time.perf_counter()
                model.render(scene.cameras[i], black)
                times[mode].append(time.perf_counter() - t0)
    e, c = statistics.median(times["eager"]), statistics.median(times["compiled"])
    cam = scene.cameras[int(pick[0])]
    return {"run": str(run), "size": f"{int(cam.width[0])}x{int(cam.height[0])}",
            "views": len(pick), "compile_s": compile_s, "eager_s": e, "compiled_s": c,
            "speedup": e / c, "break_even_views": compile_s / max(e - c, 1e-9)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", type=Path, required=True)
    ap.add_argument("--views", type=int, default=12)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = [bench(r, args.views) for r in args.runs]
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.machine(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}
    for r in rows:
        print(f"{r['run']}: {r['size']}, compile {r['compile_s']:.1f} s, eager "
              f"{r['eager_s']:.3f} s, compiled {r['compiled_s']:.3f} s ({r['speedup']:.2f}x), "
              f"pays after {r['break_even_views']:.0f} views")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
