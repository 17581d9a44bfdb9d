"""Benchmark: a field's forward + backward at float32 and under bfloat16 autocast, on this device.

For each volumetric model at its default preset, evaluates ``RadianceField`` (encoder, density
and colour MLPs) on the model's own samples per step (``default_target_samples``) with
gradients, and times forward + backward: the median of ``--reps`` runs after ``--warmup``.
``DecoderConfig.precision`` picks the MLPs' autocast; the encoders stay float32 either way.

    .venv/bin/python apps/bench_precision_cpu.py [--vary] [--out TABLE.md]

apps/results/precision_cpu/bench.md holds both modes' tables and the training runs at fixed
steps behind them.

Also prints the largest difference of the outputs between the two precisions (relative to
their float32 magnitude), so the speed is read next to what it costs.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import Tensor

from fieldkit.fields.registry import build_model, merge, preset_config

from stamp import stamp

KINDS = ("hashgrid", "triplane", "mlp")


def time_field(kind: str, precision: str, reps: int, warmup: int, vary: bool = False
               ) -> tuple[float, int, Tensor]:
    """Median seconds of forward + backward on the model's samples per step (``vary``: a
    random count between half of it and all of it each run, as a marched batch varies), the
    sample count, and the outputs [n, 4] of the first run (to compare precisions)."""
    torch.manual_seed(0)
    config = merge(preset_config(kind), {"decoder": {"precision": precision}})
    model = build_model(kind, 1.0, config=config)
    n = model.default_target_samples
    g = torch.Generator().manual_seed(1)
    pts = torch.rand(n, 3, generator=g) * 2 - 1
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    times, first = [], None
    for i in range(warmup + reps):
        m = int(torch.randint(n // 2, n + 1, (1,), generator=g)) if vary and i else n
        t0 = time.perf_counter()
        rgb, sigma = model.field(pts[:m], dirs[:m])
        (rgb.sum() + sigma.log1p().sum()).backward()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        if first is None:
            first = torch.cat([rgb.detach(), sigma.detach()[:, None]], dim=-1)
        model.zero_grad(set_to_none=True)
    return statistics.median(times), n, first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kinds", nargs="+", default=list(KINDS))
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--vary", action="store_true",
                    help="a different sample count every run (as ray batches), not a fixed one")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    for kind in args.kinds:
        t32, n, o32 = time_field(kind, "fp32", args.reps, args.warmup, args.vary)
        t16, _, o16 = time_field(kind, "bf16", args.reps, args.warmup, args.vary)
        rel = float(((o16 - o32).abs() / o32.abs().clamp_min(1e-3)).max())
        rows.append((kind, n, t32 * 1e3, t16 * 1e3, t32 / t16, rel))
        print(f"{kind}: {n} samples, fp32 {t32 * 1e3:.1f} ms, bf16 {t16 * 1e3:.1f} ms "
              f"({t32 / t16:.2f}x), largest relative output difference {rel:.3g}")
    if args.out:
        meta = stamp()
        lines = [
            "# Field forward + backward: float32 vs bfloat16 autocast of the MLPs",
            "",
            f"- date: {meta['date']}",
            f"- machine: {meta['machine']}",
            f"- command: `{meta['command']}`",
            "- median of the runs after the warm-up; fresh models at their default preset",
            "",
            "| model | samples | fp32 ms | bf16 ms | fp32 / bf16 | largest relative output "
            "difference |",
            "|---|---|---|---|---|---|",
            *[f"| {k} | {n} | {a:.1f} | {b:.1f} | {r:.2f}x | {d:.3g} |"
              for k, n, a, b, r, d in rows],
            "",
        ]
        args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
