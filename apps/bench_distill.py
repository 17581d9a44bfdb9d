"""Benchmark: distillation between representations on lego-400 at 200x200, against training the
same student from scratch on the photos for the same wall time.

    .venv/bin/python apps/bench_distill.py --teacher apps/results/lego_cpu_2level/run \\
        --out apps/results/distill_lego_cpu

The teacher is a hash-grid run trained for 300 s (``apps/bench_train.py``). Pairs whose teacher
is not a hash grid (``splat:hashgrid``, ``triplane:hashgrid``) use the student this benchmark
distilled from the hash grid as their teacher (a round trip). For each pair: the distillation
time (teacher renders + student optimisation), student vs teacher PSNR on held-out novel views,
student and teacher vs the photos on evenly spaced test views, and a student of the same
architecture trained from scratch for the same wall time, on the same test views. Writes
OUT/bench.json and OUT/bench.md; the runs stay in OUT/run (not committed).

The time budget (``--fraction`` of the teacher's training time) is the whole distillation's:
the teacher's renders come out of the student's optimisation time. Each pair runs in a fresh
Python process (a long process was seen to slow down: its hash-grid steps took 2x longer after
an hour).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

from fieldkit.distill.config import DistillConfig
from fieldkit.distill.report import versus_photos
from fieldkit.distill.run import distill
from fieldkit.distill.source import teacher_train_seconds
from fieldkit.fields.registry import changed_fields, config_from_dict, merge, model_class, \
    preset_config
from fieldkit.train.config import TrainConfig
from fieldkit.train.run import load_run_scene, prepare, read_config

from stamp import stamp

PAIRS = ("hashgrid:triplane", "hashgrid:mlp", "hashgrid:splat", "splat:hashgrid",
         "triplane:hashgrid")


def scratch(scene: Path, kind: str, seconds: float, out: Path, downscale: int, views: int,
            model_config=None) -> dict:
    """Train ``kind`` (``model_config``, default: its default preset) from scratch on the
    photos for ``seconds``; PSNR on ``views`` test views."""
    trainer = prepare(scene, kind, out, TrainConfig(max_time=seconds, eval_every=0),
                      downscale=downscale, model_config=model_config)
    trainer.train()
    res = versus_photos({"student": trainer.model.eval()}, load_run_scene(out),
                        views)
    return {"steps": trainer.step_count, "seconds": trainer.elapsed, **res["student"]}


def time_to_match(scene: Path, kind: str, wall: float, target: float, start_psnr: float,
                  model_config, multiples: list[float], out: Path, downscale: int,
                  views: int) -> dict:
    """Scratch training time that reaches the student's PSNR vs the photos (``target``).

    ``model_config`` (None: the model's default) is the better scratch architecture at ``wall``
    seconds, where it reached ``start_psnr``. Trains it from scratch for ``wall * m`` seconds, m in ``multiples``, each a run of its own with its whole
    learning-rate schedule (an intermediate point of one long run would not have decayed it),
    and stops at the first that reaches ``target``. ``seconds`` interpolates in log time between
    the last budget below the target and the first at or above it; None when none reached it.
    """
    points = [{"seconds": wall, "psnr": start_psnr}]
    for m in multiples:
        if points[-1]["psnr"] >= target:
            break
        res = scratch(scene, kind, wall * m, out / f"x{m:g}", downscale, views,
                      model_config=model_config)
        points.append({"seconds": wall * m, "psnr": res["psnr"], "steps": res["steps"]})
        print(f"scratch {kind} {wall * m:.0f} s: {res['psnr']:.2f} dB (student {target:.2f})",
              flush=True)
    seconds = wall if start_psnr >= target else None
    for a, b in zip(points, points[1:]):
        if a["psnr"] < target <= b["psnr"]:
            f = (target - a["psnr"]) / (b["psnr"] - a["psnr"])
            seconds = math.exp(math.log(a["seconds"]) + f * (math.log(b["seconds"])
                                                            - math.log(a["seconds"])))
    return {"target_psnr": target, "architecture": "student" if model_config is not None
            else "default", "points": points, "seconds": seconds,
            "speedup": seconds / wall if seconds else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", type=Path, default=Path("apps/results/lego_cpu_2level/run"))
    ap.add_argument("--pairs", nargs="+", default=list(PAIRS))
    ap.add_argument("--fraction", type=float, default=0.25,
                    help="field students: the whole distillation's time as a share of the teacher's training time")
    ap.add_argument("--splat-time", type=float, default=400.0,
                    help="seconds for a splat student's whole distillation (teacher renders included)")
    ap.add_argument("--gt-views", type=int, default=20)
    ap.add_argument("--teacher-for", nargs="*", default=[], metavar="KIND=RUN",
                    help="teacher runs of other kinds (default: this benchmark's own students)")
    ap.add_argument("--match-multiples", nargs="*", type=float, default=[],
                    metavar="M", help="also train scratch for M times the distillation's time, "
                    "for each M in turn until it reaches the student's PSNR (speed-up)")
    ap.add_argument("--out", type=Path, default=Path("apps/results/distill_lego_cpu"))
    ap.add_argument("--child-rows", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    run_root = args.out / "run"
    if args.child_rows is None and run_root.exists():
        raise SystemExit(f"{run_root} exists; delete it to rerun")
    tcfg = read_config(args.teacher)
    t_seconds = teacher_train_seconds(args.teacher)
    scene, downscale = Path(tcfg["scene"]), int(tcfg["downscale"])
    students: dict[str, Path] = {tcfg["model"]["kind"]: args.teacher}
    students.update({k: Path(v) for k, v in (a.split("=", 1) for a in args.teacher_for)})
    if args.child_rows is None:   # the parent: one fresh process per pair
        rows = []
        for pair in args.pairs:
            rows_file = args.out / f".rows-{pair.replace(':', '-')}.json"
            args.out.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, __file__, "--teacher", str(args.teacher), "--pairs", pair,
                   "--fraction", str(args.fraction), "--splat-time", str(args.splat_time),
                   "--gt-views", str(args.gt_views), "--out", str(args.out),
                   "--match-multiples", *(f"{m:g}" for m in args.match_multiples),
                   "--child-rows", str(rows_file),
                   "--teacher-for", *(f"{k}={v}" for k, v in students.items())]
            subprocess.run(cmd, check=True)
            rows += json.loads(rows_file.read_text())
            rows_file.unlink()
            src, dst = pair.split(":")
            students.setdefault(dst, run_root / f"{src}-to-{dst}")
        write_results(args, rows, tcfg, t_seconds, scene, downscale)
        return
    rows = []
    for pair in args.pairs:
        src, dst = pair.split(":")
        teacher = students[src]
        budget = args.splat_time if dst == "splat" else args.fraction * t_seconds
        out = run_root / f"{src}-to-{dst}"
        cfg = DistillConfig(gt_views=args.gt_views)
        report = distill(teacher, dst, out, TrainConfig(max_time=budget), cfg)
        students.setdefault(dst, out)
        wall = report["time"]["distill_seconds"]
        # the student's own architecture (a distillation default may differ from the model's)
        arch = config_from_dict(model_class(dst).config_class,
                                read_config(out)["model"]["config"])
        base = scratch(scene, dst, wall, run_root / f"scratch-{dst}-{pair.replace(':', '-')}",
                       downscale, args.gt_views, model_config=arch)
        extra = {}
        plain_arch = merge(preset_config(dst), {"render": {"bound": arch.render.bound}})
        if dst != "splat" and changed_fields(arch, plain_arch):
            # ... and the model's default one, which may train faster from the photos
            plain = scratch(scene, dst, wall, run_root / f"scratch-default-{dst}-"
                            f"{pair.replace(':', '-')}", downscale, args.gt_views)
            extra = {"scratch_default_psnr": plain["psnr"], "scratch_default_steps":
                     plain["steps"]}
        if args.match_multiples:
            own = base["psnr"] >= extra.get("scratch_default_psnr", -math.inf)
            extra["scratch_match"] = time_to_match(
                scene, dst, wall, report["vs_photos"]["student"]["psnr"],
                base["psnr"] if own else extra["scratch_default_psnr"], arch if own else None,
                args.match_multiples, run_root / f"match-{pair.replace(':', '-')}", downscale,
                args.gt_views)
        gt = report["vs_photos"]
        rows.append({"pair": pair, "teacher_run": str(teacher), "budget_seconds": budget,
                     "distill_seconds": wall, "teacher_render_seconds":
                         report["time"]["teacher_seconds"],
                     "student_vs_teacher_psnr": report["vs_teacher"]["psnr"],
                     "student_psnr": gt["student"]["psnr"], "teacher_psnr": gt["teacher"]["psnr"],
                     "student_ssim": gt["student"]["ssim"], "scratch_psnr": base["psnr"],
                     "scratch_steps": base["steps"], "student_steps": report["student"]["steps"],
                     "student_params": report["student"]["num_params"],
                     "student_bytes": report["student"]["bytes_on_disk"],
                     "student_seconds_per_frame": gt["student"]["seconds_per_frame"],
                     "teacher_seconds_per_frame": gt["teacher"]["seconds_per_frame"], **extra})
        print(json.dumps(rows[-1]), flush=True)
    args.child_rows.write_text(json.dumps(rows))


def write_results(args, rows: list[dict], tcfg: dict, t_seconds: float, scene: Path,
                  downscale: int) -> None:
    meta = {**stamp(), "teacher": str(args.teacher),
            "teacher_train_seconds": t_seconds, "scene": str(scene), "downscale": downscale,
            "gt_views": args.gt_views}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    lines = [f"# Distillation on {scene.name}, teacher hash grid trained {t_seconds:.0f} s", "",
             f"- date: {meta['date']}", f"- machine: {meta['machine']}",
             f"- command: `{meta['command']}`",
             f"- PSNR vs photos on {args.gt_views} evenly spaced test views (white background); "
             "student vs teacher on 8 held-out novel views",
             "- scratch: the student's architecture trained on the photos for the distillation's "
             "whole wall time (teacher renders included)", "",
             "| pair | distill s (teacher renders) | student vs teacher | student vs photos | "
             "teacher vs photos | scratch, same time | student - scratch |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['pair']} | {r['distill_seconds']:.0f} ({r['teacher_render_seconds']:.0f})"
                     f" | {r['student_vs_teacher_psnr']:.2f} | {r['student_psnr']:.2f} | "
                     f"{r['teacher_psnr']:.2f} | {r['scratch_psnr']:.2f} | "
                     f"{r['student_psnr'] - r['scratch_psnr']:+.2f} |")
    for r in rows:
        if "scratch_default_psnr" in r:
            lines += ["", f"{r['pair']}: the student's architecture is a distillation default "
                      "(fieldkit/distill/config.py: STUDENT_DEFAULTS); the model's default "
                      f"architecture from scratch for the same time: {r['scratch_default_psnr']:.2f}"
                      f" dB ({r['scratch_default_steps']} steps)."]
    matched = [r for r in rows if "scratch_match" in r]
    if matched:
        lines += ["", "Speed-up: the scratch training time that reaches the student's PSNR vs the "
                  "photos (each budget a run of its own; log-time interpolation between the "
                  "two around it).", "",
                  "| pair | student vs photos | scratch architecture | scratch runs (s: dB) | "
                  "time to match | speed-up |", "|---|---|---|---|---|---|"]
        for r in matched:
            m = r["scratch_match"]
            pts = ", ".join(f"{p['seconds']:.0f}: {p['psnr']:.2f}" for p in m["points"])
            reach = (f"{m['seconds']:.0f} s", f"{m['speedup']:.1f}x") if m["seconds"] else \
                (f"> {m['points'][-1]['seconds']:.0f} s",
                 f"> {m['points'][-1]['seconds'] / m['points'][0]['seconds']:.0f}x")
            lines.append(f"| {r['pair']} | {m['target_psnr']:.2f} | {m['architecture']} | {pts} "
                         f"| {reach[0]} | {reach[1]} |")
    (args.out / "bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f} s")
