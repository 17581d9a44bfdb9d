"""One distillation (or one training from the photos) with overridden settings, at a fixed
step budget, appended as a JSON line to a results file: the A/B runs behind the defaults of
fieldkit/distill/config.py and fieldkit/train/config.py.

    python apps/sweep_distill.py NAME --teacher RUN --to KIND [train.KEY=VALUE ...] \
        [distill.KEY=VALUE ...] [model.KEY.SUBKEY=VALUE ...]
    python apps/sweep_distill.py NAME --scratch KIND [train.KEY=VALUE ...]

A fixed ``train.max_steps`` compares settings without this VM's drifting speed (a time budget
gives 400-600 hash-grid steps in 75 s depending on the minute). Values are JSON
(``train.lr=0.02``, ``distill.volume_fraction=0.25``). Runs go to --runs/NAME; PSNR against the
photos is on 20 evenly spaced test views (white background), as in bench_distill.py.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from fieldkit.distill.config import DistillConfig, student_config
from fieldkit.distill.report import versus_photos
from fieldkit.distill.run import distill
from fieldkit.fields.registry import merge, preset_config
from fieldkit.train.config import TrainConfig
from fieldkit.train.run import load_run_scene, prepare


def overrides(pairs: list[str]) -> tuple[dict, dict, dict]:
    """train.KEY=VALUE / distill.KEY=VALUE / model.A.B=VALUE (JSON values) -> (train kwargs,
    distill kwargs, nested model-config overrides)."""
    train, dist, model = {}, {}, {}
    for item in pairs:
        key, _, value = item.partition("=")
        group, _, name = key.partition(".")
        if group not in ("train", "distill", "model") or not name or not value:
            raise SystemExit(f"expected train.KEY=VALUE, distill.KEY=VALUE or "
                             f"model.KEY.SUBKEY=VALUE, got {item!r}")
        if group == "model":
            *path, last = name.split(".")
            node = model
            for part in path:
                node = node.setdefault(part, {})
            node[last] = json.loads(value)
        else:
            (train if group == "train" else dist)[name] = json.loads(value)
    return train, dist, model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name")
    ap.add_argument("settings", nargs="*", help="train.KEY=VALUE or distill.KEY=VALUE")
    ap.add_argument("--teacher", type=Path, help="teacher run to distil")
    ap.add_argument("--to", help="student kind")
    ap.add_argument("--scratch", help="train this kind from the photos instead")
    ap.add_argument("--scene", type=Path, default=Path("../shared/scenes/lego-400"))
    ap.add_argument("--downscale", type=int, default=2)
    ap.add_argument("--runs", type=Path, default=Path("/tmp/fieldkit-sweep"))
    ap.add_argument("--results", type=Path, default=Path("/tmp/fieldkit-sweep/results.jsonl"))
    args = ap.parse_intermixed_args()
    train, dist, model = overrides(args.settings)
    kind = args.scratch or args.to
    # a distillation student starts from the distillation's defaults, as `fieldkit distill`
    base = preset_config(kind) if args.scratch else student_config(kind) if kind else None
    model_config = merge(base, model) if kind else None
    out = args.runs / args.name
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    if args.scratch:
        trainer = prepare(args.scene, args.scratch, out,
                          TrainConfig(**{"eval_every": 0, **train}), downscale=args.downscale,
                          model_config=model_config)
        trainer.train()
        res = versus_photos({"student": trainer.model.eval()}, load_run_scene(out),
                            20)
        row = {"name": args.name, "kind": args.scratch, "steps": trainer.step_count,
               "seconds": round(trainer.elapsed, 1), "student": round(res["student"]["psnr"], 2)}
    else:
        if args.teacher is None or args.to is None:
            raise SystemExit("give --teacher RUN --to KIND, or --scratch KIND")
        report = distill(args.teacher, args.to, out, TrainConfig(**train), DistillConfig(**dist),
                         quiet=True, model_config=model_config)
        row = {"name": args.name, "pair": f"{report['teacher']['kind']}:{args.to}",
               "steps": report["student"]["steps"],
               "seconds": round(report["time"]["distill_seconds"], 1),
               "vs_teacher": round(report["vs_teacher"]["psnr"], 2),
               "student": round(report["vs_photos"]["student"]["psnr"], 2),
               "teacher": round(report["vs_photos"]["teacher"]["psnr"], 2)}
    row["settings"] = args.settings
    row["wall"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(row))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
