"""Benchmark (GPU): lego-400 PSNR against training time, hash-encoding throughput, 800x800 render
time and peak GPU memory, against the project's GPU targets.

    python apps/bench_gpu.py                      # everything (estimated 10 min on an H100)
    python apps/bench_gpu.py --parts train        # or one part per call: train, hash
    python apps/bench_gpu.py --dry-run            # every part on the CPU with tiny budgets

Writes OUT/bench.json and OUT/bench.md (OUT: apps/results/gpu_<device-slug>; runs/gpu_dryrun
for --dry-run). A call with ``--parts`` replaces those parts in an existing OUT/bench.json of
the same device and keeps the others, and a train call with ``--models`` replaces only those
models, so the work can be split over calls of a limited length (apps/gpu_session.sh).
Refuses to run without CUDA, except with --dry-run.

1. Training (``--parts train``), through the project's own API (``fieldkit.train.run.prepare``,
   ``Trainer.step``, ``fieldkit.train.evaluate.evaluate_run``) at the scene's full resolution:
   - curve: ONE run per model with the largest budget (120 s); training pauses at 15, 30, 60
     and 120 s of training time (evaluation excluded) for a test PSNR. The learning-rate
     schedule is set by the 120 s budget (decays at 50/75/90 %), so the points before 120 s are
     PSNR *within* a 120 s run, not what a run with that budget would reach;
   - target: a separate hashgrid run with a 60 s budget (its own schedule), which is what
     "hashgrid >= 35.5 dB within 60 s" asks;
   - evaluation on every ``--test-every``-th test view (default 10: 20 of lego's 200; the count
     is in the table), white background, as ``fieldkit eval``;
   - before the timed runs, a short throwaway run of each model pays the one-time costs
     (CUDA context, cuBLAS, kernel builds and torch.compile of the hash grid, nerfacc's JIT);
     its wall time is reported;
   - render time of one 800x800 frame (the first test camera scaled 2x) of each model after
     its curve run: median of ``--render-repeats`` after one warm-up frame, CUDA-synchronised.
2. Hash encoding (``--parts hash``): ``HashGrid`` forward + backward (``out.backward(g)``, the
   table gradient dropped between steps) at 2^18 and 2^20 uniform points, L=16, F=2, T=19
   (instant-ngp's and tiny-cuda-nn's default): our torch twin eager ("fused" impl), the same
   under ``torch.compile(dynamic=False)`` when it compiles, and tiny-cuda-nn's HashGrid when
   ``import tinycudann`` works (skipped with the reason otherwise). Warm-up steps first (they
   include compilation), then the median of ``--hash-steps`` steps timed with CUDA events.
3. Peak GPU memory (``torch.cuda.max_memory_allocated``, reset before each part) per part.

The hash-encoding part is apps/gpu_hash.py, the report apps/gpu_report.py, timing and memory
apps/gpu_timing.py.

Targets (written into the output): hashgrid >= 35.5 dB within 60 s; hash encoding >= 1e8
samples/s forward + backward without tiny-cuda-nn; one 800x800 frame <= 30 ms.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

from gpu_hash import bench_hash
from gpu_report import FRAME_SIZE, TARGET_PSNR_S, environment, markdown, slug
from gpu_timing import Clock, PeakMemory, _free

REPO = Path(__file__).resolve().parents[1]
SCENES = REPO.parent / "shared" / "scenes"
DEMO_SCENE = REPO / "scenes" / "demo"

REAL = dict(budgets=[15.0, 30.0, 60.0, 120.0], target_budget=TARGET_PSNR_S, downscale=1,
            test_every=10, warmup_steps=200, points=[18, 20], frame=FRAME_SIZE,
            render_repeats=5, hash_steps=20)
DRY = dict(budgets=[0.5, 1.0, 1.5, 2.0], target_budget=1.0, downscale=8, test_every=50,
           warmup_steps=5, points=[12], frame=64, render_repeats=3, hash_steps=5)
"""Defaults of a real run and of --dry-run (CPU, tiny budgets, 64x64 frame, 2^12 points)."""


# ---------------------------------------------------------------------------- 1. training
def _model_config(kind: str, args):
    """The preset's config with --precision / --backend applied where the config has them."""
    from fieldkit.fields.registry import merge, preset_config

    config = preset_config(kind, args.preset)
    over: dict = {}
    if args.precision:
        over["decoder"] = {"precision": args.precision}
    if args.backend:
        for f in dataclasses.fields(config):
            sub = getattr(config, f.name)
            if dataclasses.is_dataclass(sub) and hasattr(sub, "backend"):
                over.setdefault(f.name, {})["backend"] = args.backend
    return merge(config, over)


def _describe_backends(model, device: torch.device) -> dict:
    """Precision and backends the model runs with on ``device`` (what is knowable up front)."""
    from fieldkit.fields.radiance import autocast_dtype

    c = model.config
    dtype = autocast_dtype(c.decoder.precision, device)
    out = {"decoder_precision": c.decoder.precision,
           "mlp_dtype": "float32" if dtype is None else str(dtype).replace("torch.", "")}
    for part in ("encoder", "render"):
        backend = getattr(getattr(c, part), "backend", None)
        if backend is not None:
            out[f"{part}_backend"] = backend
    fast = getattr(model.field.encoder, "_fast", None)   # which hash-grid path ran, if known
    if isinstance(fast, dict) and device.type in fast:
        f = fast[device.type]
        out["encoder_path"] = ("eager torch" if f is None else "tiny-cuda-nn"
                               if getattr(f, "encodes_whole", False) else "torch.compile")
    try:  # the volume backend choice, where this version of fieldkit has one
        from fieldkit.render.backends import choose_volume_backend

        out["volume_backend_chosen"] = choose_volume_backend(c.render.backend, device)
    except Exception:
        pass
    return out


def _prepare(scene: Path, kind: str, run_dir: Path, args, device: torch.device, **budget):
    from fieldkit.train.config import TrainConfig
    from fieldkit.train.run import prepare

    if run_dir.exists():  # our own earlier output: prepare() refuses to overwrite a run
        shutil.rmtree(run_dir)
    config = TrainConfig(eval_every=0, checkpoint_every=1e9, **budget)
    return prepare(scene, kind, run_dir, config, downscale=args.downscale, device=str(device),
                   preset=args.preset, model_config=_model_config(kind, args))


def _evaluate(trainer, mem: PeakMemory, label: str) -> dict:
    from fieldkit.train.evaluate import evaluate_run

    with mem.part(f"evaluate {label}"):
        m = evaluate_run(trainer.run_dir, scene=trainer.scene, model=trainer.model,
                         save_renders=False)
    return {"psnr": m["psnr"], "ssim": m["ssim"], "views": m["num_views"],
            "eval_s_per_view": m["seconds_per_view"], "resolution": m["resolution"]}


def train_with_marks(scene: Path, kind: str, run_dir: Path, marks: list[float], args,
                     device: torch.device, mem: PeakMemory, label: str):
    """Train ``kind`` with a time budget of max(marks); pause at each mark (training seconds)
    for a test PSNR. Peak memory goes to the parts "train LABEL" and "evaluate LABEL".
    Returns (trainer, points)."""
    trainer = _prepare(scene, kind, run_dir, args, device, max_time=max(marks))
    test = trainer.scene.split("test")
    trainer.scene.splits["test"] = test[::args.test_every]
    points, todo = [], sorted(marks)
    wall0 = time.perf_counter()
    while todo:
        with mem.part(f"train {label}"):
            while not trainer.done() and trainer.elapsed < todo[0]:
                trainer.step()
        mark = todo.pop(0)
        points.append({"mark_s": mark, "train_s": trainer.elapsed, "steps": trainer.step_count,
                       "wall_s": time.perf_counter() - wall0,
                       **_evaluate(trainer, mem, label)})
        print(f"  {kind} {run_dir.name}: {trainer.elapsed:6.1f} s, {trainer.step_count} steps, "
              f"PSNR {points[-1]['psnr']:.2f} on {points[-1]['views']} views", flush=True)
    trainer.save()
    return trainer, points


def warm_up(scene: Path, kind: str, run_dir: Path, args, device: torch.device) -> float:
    """A throwaway run of ``--warmup-steps`` steps plus one rendered test view: the one-time
    costs (CUDA context, kernel builds, compilation) land here. Returns its wall seconds."""
    t0 = time.perf_counter()
    trainer = _prepare(scene, kind, run_dir, args, device, max_steps=args.warmup_steps)
    while not trainer.done():
        trainer.step()
    trainer.render(trainer.scene.cameras[int(trainer.scene.split("test")[0])])
    seconds = time.perf_counter() - t0
    del trainer
    _free(device)
    return seconds


def time_frames(model, camera, size: int, repeats: int, device: torch.device) -> dict:
    """Median / min milliseconds of ``model.render`` of one ``size`` x ``size`` frame."""
    cam = camera.resized(torch.tensor([size]), torch.tensor([size])).to(device)
    bg = torch.ones(3, device=device)
    clock, times = Clock(device), []
    model.eval()
    with torch.no_grad():
        model.render(cam, bg)  # warm-up
        for _ in range(repeats):
            with clock.time(times):
                model.render(cam, bg)
    return {"median_ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3,
            "frames": repeats, "size": f"{size}x{size}"}


def bench_train(scene: Path, out: Path, args, device: torch.device, mem: PeakMemory) -> dict:
    result: dict = {"scene": scene.name, "budgets": args.budgets, "models": {}}
    runs = out / "run"   # ignored by git (apps/results/**/run/)
    for kind in args.models:
        print(f"[train] {kind}: warm-up run", flush=True)
        warm = warm_up(scene, kind, runs / f"{kind}-warmup", args, device)
        print(f"[train] {kind}: {max(args.budgets):g} s run, PSNR at {args.budgets} s", flush=True)
        trainer, curve = train_with_marks(scene, kind, runs / f"{kind}-curve", args.budgets,
                                          args, device, mem, kind)
        test = trainer.scene.split("test")
        with mem.part(f"render {kind}"):
            frame = time_frames(trainer.model, trainer.scene.cameras[int(test[0])], args.frame,
                                args.render_repeats, device)
        print(f"  {kind} {frame['size']} frame: {frame['median_ms']:.1f} ms (median)",
              flush=True)
        result["models"][kind] = {
            "warmup_wall_s": warm, "warmup_steps": args.warmup_steps, "curve": curve,
            "render": frame, "num_params": trainer.model.num_params,
            **_describe_backends(trainer.model, device),
            "peak_mib": {p: mem.get(f"{p} {kind}") for p in ("train", "evaluate", "render")}}
        result["resolution"] = curve[-1]["resolution"]
        del trainer
        _free(device)
    if args.target_budget and "hashgrid" in args.models:
        kind, budget = "hashgrid", args.target_budget
        print(f"[train] {kind}: separate {budget:g} s run (target)", flush=True)
        tag = f"{kind}-{budget:g}s"
        trainer, points = train_with_marks(scene, kind, runs / tag, [budget], args, device, mem,
                                           tag)
        result["target_run"] = {"model": kind, "budget_s": budget, **points[-1],
                                "peak_mib": mem.get(f"train {tag}")}
        del trainer
        _free(device)
    from fieldkit.data.scene import load_cameras

    _, splits, _ = load_cameras(scene, downscale=args.downscale)
    result["test_views_total"] = int(len(splits["test"]))
    result["test_every"] = args.test_every
    return result


# ---------------------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true",
                    help="run every part on the CPU with tiny budgets (checks the program)")
    ap.add_argument("--parts", nargs="+", choices=["train", "hash"], default=["train", "hash"])
    ap.add_argument("--scene", type=Path, default=SCENES / "lego-400",
                    help="scene folder (default ../shared/scenes/lego-400; a dry run falls back "
                         "to the demo scene when it is absent)")
    ap.add_argument("--models", nargs="+", default=["hashgrid", "triplane"])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=None,
                    help="decoder MLP precision (default: the model's own, auto = bf16 on CUDA)")
    ap.add_argument("--backend", choices=["auto", "cuda", "torch"], default=None,
                    help="every component's backend (default: the model's own, auto)")
    ap.add_argument("--budgets", type=float, nargs="+", help="seconds (default 15 30 60 120)")
    ap.add_argument("--target-budget", type=float,
                    help="seconds of the separate hashgrid run (default 60; 0: none)")
    ap.add_argument("--downscale", type=int, help="default 1 (400x400 lego)")
    ap.add_argument("--test-every", type=int, help="evaluate every k-th test view (default 10)")
    ap.add_argument("--warmup-steps", type=int, help="steps of the throwaway run (default 200)")
    ap.add_argument("--frame", type=int, help="rendered frame size (default 800)")
    ap.add_argument("--render-repeats", type=int, help="timed frames (default 5)")
    ap.add_argument("--points", type=int, nargs="+", help="log2 of hash points (default 18 20)")
    ap.add_argument("--log2-table", type=int, nargs="+", default=[19])
    ap.add_argument("--hash-warmup", type=int, default=3)
    ap.add_argument("--hash-steps", type=int, help="timed steps (default 20)")
    ap.add_argument("--out", type=Path, help="default apps/results/gpu_<device-slug> "
                                             "(runs/gpu_dryrun for --dry-run)")
    args = ap.parse_args(argv)
    for key, value in (DRY if args.dry_run else REAL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


SAME_TRAIN = ("scene", "resolution", "budgets", "test_every")
"""Train results of another call are merged with a new call's (``--models``) when these agree."""


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("bench_gpu.py needs a CUDA device and torch.cuda.is_available() is False; pass "
              "--dry-run to check it on the CPU with tiny budgets", file=sys.stderr)
        return 2
    os.environ.setdefault("FIELDKIT_QUIET", "1")
    device = torch.device("cpu" if args.dry_run else "cuda")
    scene = args.scene
    if not scene.is_dir():
        if not args.dry_run:
            print(f"bench_gpu.py: no scene at {scene}; pass --scene PATH (lego-400 is in "
                  "../shared/scenes)", file=sys.stderr)
            return 2
        scene = DEMO_SCENE
        if not scene.is_dir():
            from fieldkit.data.demo import generate_demo_scene

            scene = generate_demo_scene(REPO / "runs" / "gpu_dryrun_demo", size=64, n_test=8)
        args.downscale = 1
        print(f"[dry run] {args.scene} is absent: using the demo scene {scene}", flush=True)
    env = environment(device)
    out = args.out or (REPO / "runs" / "gpu_dryrun" if args.dry_run else
                       REPO / "apps" / "results" / f"gpu_{slug(env['device'])}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    if res.get("env", {}).get("device") != env["device"] or res.get("dry_run") != args.dry_run:
        res = {}  # parts from another device or mode are not merged
    res.update(env=env, dry_run=args.dry_run)
    res.setdefault("parts", {})
    command = shlex.join(["python", "apps/bench_gpu.py", *(sys.argv[1:] if argv is None
                                                              else argv)])
    mem = PeakMemory(device)
    print(f"bench_gpu: {env['device']}, torch {env['torch']}, parts {' '.join(args.parts)}, "
          f"writing {out}", flush=True)
    for part in args.parts:
        t0 = time.perf_counter()
        calls = res["parts"].get(part, [])
        if part == "train":
            new, old = bench_train(scene, out, args, device, mem), res.get("train")
            if old and all(old.get(k) == new.get(k) for k in SAME_TRAIN):  # other models kept
                new["models"] = {**old["models"], **new["models"]}
                if "target_run" in old and "target_run" not in new:
                    new["target_run"] = old["target_run"]
            else:
                calls = []
            res["train"] = new
        else:
            res["hash"], calls = bench_hash(args, device, mem), []
        calls.append({"command": command, "wall_s": round(time.perf_counter() - t0, 1),
                      "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M")})
        res["parts"][part] = calls
        path.write_text(json.dumps(res, indent=2) + "\n")   # after each part: partial results
        (out / "bench.md").write_text(markdown(res))
    print()
    print((out / "bench.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
