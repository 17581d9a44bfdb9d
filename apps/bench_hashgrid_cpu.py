"""The hash encoding on the CPU: compiled C++ loops (``fieldkit/encoders/hashgrid_cpu.py``)
against the eager torch function they replace, alternating in one process.

1. The encoding alone, default grid (16 levels, 2^19 entries): forward, and forward +
   backward, at ``--points`` random points (best of 5).
2. Training steps of a hash grid on a scene from its photos: ``--warmup`` steps first (the
   occupancy grid settles), then ``--rounds`` rounds of ``--steps`` steps with each path in
   turn (medians).

    python apps/bench_hashgrid_cpu.py [--scene ../shared/scenes/lego-400 --downscale 2]
        [--out apps/results/hashgrid_cpu/bench.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import time
from pathlib import Path

import torch

import fieldkit.encoders.hashgrid as H
from fieldkit.encoders.hashgrid import HashGrid, HashGridConfig
from fieldkit.encoders.hashgrid_cpu import cpu_hashgrid_status, encode_cpu
from fieldkit.train.config import TrainConfig
from fieldkit.train.run import prepare

REPO = Path(__file__).resolve().parents[1]
COMPILED = H.use_cpu_hashgrid


def use(path: str) -> None:
    """Encode with the compiled loops ("compiled") or the eager function ("eager")."""
    H.use_cpu_hashgrid = COMPILED if path == "compiled" else (lambda table: False)


def encoding_times(n: int) -> dict:
    grid = HashGrid(HashGridConfig())
    torch.nn.init.uniform_(grid.table, -1e-2, 1e-2)
    x = torch.rand(n, 3, generator=torch.Generator().manual_seed(0))
    up = torch.randn(n, grid.out_dim, generator=torch.Generator().manual_seed(1))
    fns = {"compiled": lambda: encode_cpu(grid, x),
           "eager": lambda: H._HashGridFunction.apply(x, grid.table, *grid.fused_args())}
    out = {}
    for name, fn in fns.items():
        fn()
        fwd, both = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            y = fn()
            t1 = time.perf_counter()
            (y.reshape(n, -1) * up).sum().backward()
            both.append(time.perf_counter() - t0)
            fwd.append(t1 - t0)
            grid.table.grad = None
        out[name] = {"forward_s": min(fwd), "forward_backward_s": min(both)}
    return out


def step_times(scene: Path, downscale: int, warmup: int, steps: int, rounds: int) -> dict:
    out_dir = Path("/tmp/bench_hashgrid_cpu")
    shutil.rmtree(out_dir, ignore_errors=True)
    tr = prepare(scene, "hashgrid", out_dir, TrainConfig(max_steps=10**6, eval_every=0,
                                                         checkpoint_every=1e9,
                                                         log_every=10**9),
                 downscale=downscale)
    use("compiled")
    for _ in range(warmup):
        tr.step()
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(rounds):
        for name in times:
            use(name)
            t0 = time.perf_counter()
            for _ in range(steps):
                tr.step()
            times[name].append((time.perf_counter() - t0) / steps)
    use("compiled")
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"rounds": times, "median_s": med, "speedup": med["eager"] / med["compiled"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", type=Path, default=REPO.parent / "shared" / "scenes" / "lego-400")
    ap.add_argument("--downscale", type=int, default=2)
    ap.add_argument("--points", type=int, nargs="+", default=[1 << 14, 1 << 18])
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    ok, reason = cpu_hashgrid_status()
    if not ok:
        raise SystemExit(f"the compiled hash encoding is not available: {reason}")
    enc = {n: encoding_times(n) for n in args.points}
    for n, r in enc.items():
        print(f"{n} points: " + "; ".join(
            f"{k} forward {v['forward_s'] * 1e3:.1f} ms, with backward "
            f"{v['forward_backward_s'] * 1e3:.1f} ms" for k, v in r.items()))
    steps = step_times(args.scene, args.downscale, args.warmup, args.steps, args.rounds)
    print(f"training steps ({args.scene.name}, downscale {args.downscale}): eager "
          f"{steps['median_s']['eager'] * 1e3:.1f} ms -> compiled "
          f"{steps['median_s']['compiled'] * 1e3:.1f} ms ({steps['speedup']:.2f}x)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.machine(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "scene": str(args.scene), "downscale": args.downscale, "encoding": enc,
            "steps": steps}, indent=1))


if __name__ == "__main__":
    main()
