"""Benchmark: train one model on a real scene for a wall-clock budget, then PSNR/SSIM on every
test view (lego-400 at --downscale 2 = 200x200 by default; evaluation on white).

    .venv/bin/python apps/bench_train.py --model hashgrid --max-time 300 --out apps/results/lego_cpu

Writes OUT/bench.json and OUT/bench.md: steps, rays/s, samples/s, peak memory, parameters and
bytes on disk, render time of one test view, a profile of where the step time goes, test
PSNR/SSIM. Keeps the run in OUT/run (not committed). ``apps/compare_models.py`` calls ``bench``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import resource
import time
from pathlib import Path

from fieldkit.train.config import TrainConfig
from fieldkit.train.evaluate import evaluate_run
from fieldkit.train.run import prepare

from stamp import machine

SCENES = Path(__file__).resolve().parents[1].parent / "shared" / "scenes"


def profile_steps(trainer, n: int = 5) -> list[tuple[str, float]]:
    """Top operators by self CPU time over ``n`` training steps."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            trainer.step()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1
    return [(e.key, 100.0 * e.self_cpu_time_total / total) for e in rows[:12]]


def render_seconds(trainer, view: int, repeats: int = 3) -> float:
    """Best-of-``repeats`` wall time to render one full view (no grad)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        trainer.render(trainer.scene.cameras[view])  # on the model's device, result on the CPU
        best = min(best, time.perf_counter() - t0)
    return best


def overrides(pairs: list[str]) -> dict:
    """``["densify.strategy=mcmc", "sh_degree=1"]`` -> nested overrides for ``merge`` (values
    read as JSON where they parse, else as strings)."""
    out: dict = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        *parents, leaf = key.split(".")
        node = out
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = value
    return out


def bench(scene: Path, kind: str, max_time: float, downscale: int, out: Path,
          test_every: int = 1, background: str = "auto", preset: str = "default",
          settings: list[str] | None = None) -> dict:
    """Train, profile, time a render, evaluate; write OUT/bench.json + OUT/bench.md.
    ``settings``: model config overrides ``KEY=VALUE`` (``--set``)."""
    from fieldkit.fields.registry import merge, preset_config

    out.mkdir(parents=True, exist_ok=True)
    run_dir = out / "run"
    config = TrainConfig(max_time=max_time, background=background, eval_every=0,
                         checkpoint_every=1e9)
    model_config = merge(preset_config(kind, preset), overrides(settings)) if settings else None
    trainer = prepare(scene, kind, run_dir, config, downscale=downscale, preset=preset,
                      model_config=model_config)
    wall0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - wall0
    log = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines() if x]
    rays = sum(r["rays"] for r in log) * config.log_every
    samples = sum(r["samples"] for r in log) * config.log_every
    profile = profile_steps(trainer)
    test = trainer.scene.split("test")
    render_s = render_seconds(trainer, int(test[0]))
    trainer.scene.splits["test"] = test[::test_every]
    t0 = time.perf_counter()
    metrics = evaluate_run(run_dir, scene=trainer.scene, model=trainer.model)
    eval_s = time.perf_counter() - t0
    command = (f"python apps/bench_train.py --scene {scene.name} --model {kind} --preset {preset} "
               f"--max-time {max_time:g} --downscale {downscale} --background {background}"
               + "".join(f" --set {x}" for x in settings or []) + f" --out {out}")
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "command": command, "scene": scene.name, "model": kind, "preset": preset,
        "train_background": trainer.config.background, "eval_background": metrics["background"],
        "resolution": metrics["resolution"], "train_seconds": trainer.elapsed,
        "wall_seconds_training": wall, "steps": trainer.step_count,
        "rays_per_s": rays / trainer.elapsed, "samples_per_s": samples / trainer.elapsed,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "num_params": trainer.model.num_params,
        "bytes_on_disk": (run_dir / "model.safetensors").stat().st_size,
        "render_seconds_one_view": render_s,
        "test_psnr": metrics["psnr"], "test_ssim": metrics["ssim"],
        "test_views": metrics["num_views"], "eval_seconds": eval_s,
        "profile_top_ops_percent": profile,
    }
    if hasattr(trainer.model, "num_gaussians"):  # splats: rays are pixels, no samples
        result["num_gaussians"] = trainer.model.num_gaussians
        del result["samples_per_s"]
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    lines = [f"# {scene.name} {kind} ({preset}{', ' + ' '.join(settings) if settings else ''}), "
             f"{result['resolution']}, {max_time:g} s budget",
             "", f"- date: {result['date']}", f"- machine: {result['machine']}",
             f"- command: `{command}`",
             f"- trained on a {result['train_background']} background, evaluated on "
             f"{result['eval_background']}", "", "| metric | value |", "|---|---|"]
    for key in ("steps", "train_seconds", "wall_seconds_training", "rays_per_s", "samples_per_s",
                "peak_rss_mib", "num_params", "bytes_on_disk", "render_seconds_one_view",
                "test_psnr", "test_ssim", "test_views", "eval_seconds", "num_gaussians"):
        if key not in result:
            continue
        v = result[key]
        lines.append(f"| {key} | {v:.4g} |" if isinstance(v, float) else f"| {key} | {v} |")
    lines += ["", "Where step time goes (self CPU time, torch.profiler, 5 steps):", "",
              "| op | % |", "|---|---|"] + [f"| {k} | {p:.1f} |" for k, p in profile]
    (out / "bench.md").write_text("\n".join(lines) + "\n")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scene", default="lego-400", help="folder name under ../shared/scenes")
    ap.add_argument("--model", default="hashgrid")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--max-time", type=float, default=300.0)
    ap.add_argument("--downscale", type=int, default=2)
    ap.add_argument("--background", default="auto", help="training background")
    ap.add_argument("--out", type=Path, default=Path("apps/results/lego_cpu"))
    ap.add_argument("--test-every", type=int, default=1, help="evaluate every k-th test view")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a model config override, e.g. densify.strategy=mcmc (repeatable)")
    args = ap.parse_args()
    bench(SCENES / args.scene, args.model, args.max_time, args.downscale, args.out,
          args.test_every, args.background, args.preset, args.set)
    print((args.out / "bench.md").read_text())


if __name__ == "__main__":
    main()
