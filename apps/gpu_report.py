"""The environment and the markdown report of apps/bench_gpu.py (OUT/bench.md), with the
project's GPU targets."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re

import torch

TARGET_PSNR, TARGET_PSNR_S = 35.5, 60.0
TARGET_SAMPLES_PER_S = 1e8
TARGET_FRAME_MS, FRAME_SIZE = 30.0, 800


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(),
           "machine": platform.machine(), "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(device=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   capability=f"{p.major}.{p.minor}", gpu_mib=p.total_memory // 2**20,
                   multiprocessors=p.multi_processor_count)
    else:
        env["device"] = f"CPU ({platform.machine()}, {os.cpu_count()} cores), dry run"
    for mod, dist in (("nerfacc", "nerfacc"), ("gsplat", "gsplat"),
                      ("tinycudann", "tinycudann")):
        if importlib.util.find_spec(mod) is None:
            env[mod] = "not installed"
            continue
        try:
            env[mod] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            env[mod] = "installed"
    return env


def _fmt(v, spec: str = ".2f", none: str = "-") -> str:
    return none if v is None else format(v, spec)


def _verdict(ok: bool | None, dry: bool) -> str:
    if dry:
        return "n/a (dry run on the CPU)"
    return "-" if ok is None else ("**met**" if ok else "**missed**")


def markdown(res: dict) -> str:
    env, dry = res["env"], res["dry_run"]
    tr, hs = res.get("train"), res.get("hash")
    title = "DRY RUN on the CPU (tiny budgets; no GPU numbers)" if dry else env["device"]
    lines = [f"# GPU benchmark: {title}", "",
             f"- device: {env['device']}" + (f", CUDA {env['cuda']}, compute capability "
                                              f"{env['capability']}, {env['gpu_mib']} MiB"
                                              if "cuda" in env else ""),
             f"- software: torch {env['torch']}, Python {env['python']} ({env['machine']}); "
             f"nerfacc {env['nerfacc']}, gsplat {env['gsplat']}, tinycudann {env['tinycudann']}"]
    for part, calls in sorted(res["parts"].items()):
        for c in calls:
            lines.append(f"- {part}: {c['date']}, {c['wall_s']:.0f} s, command: "
                         f"`{c['command']}`")
    lines += ["", "## Targets", "", "| target | measured | verdict |", "|---|---|---|"]
    if tr and "target_run" in tr:
        t = tr["target_run"]
        lines.append(f"| {t['model']} test PSNR >= {TARGET_PSNR} dB within {TARGET_PSNR_S:g} s "
                     f"| {t['psnr']:.2f} dB after {t['train_s']:.1f} s ({t['budget_s']:g} s run, "
                     f"{t['views']} test views) | {_verdict(t['psnr'] >= TARGET_PSNR, dry)} |")
    if hs:
        best = [r for r in hs["rows"] if r["mode"] != "tcnn" and "samples_per_s" in r
                and r["log2_points"] == max(x["log2_points"] for x in hs["rows"])]
        if best:
            b = max(best, key=lambda r: r["samples_per_s"])
            ok = b["samples_per_s"] >= TARGET_SAMPLES_PER_S
            lines.append(f"| hash encoding fwd+bwd >= {TARGET_SAMPLES_PER_S:.0e} samples/s "
                         f"without tcnn | {b['samples_per_s']:.3g} at 2^{b['log2_points']} "
                         f"({b['mode']}, best of eager / compiled) | {_verdict(ok, dry)} |")
    if tr:
        for kind, m in tr["models"].items():
            f = m["render"]
            lines.append(f"| {kind}: one {FRAME_SIZE}x{FRAME_SIZE} frame <= {TARGET_FRAME_MS:g} "
                         f"ms | {f['median_ms']:.1f} ms ({f['size']}, median of {f['frames']}) | "
                         f"{_verdict(f['median_ms'] <= TARGET_FRAME_MS, dry)} |")
    if tr:
        n_eval = tr["models"][next(iter(tr["models"]))]["curve"][-1]["views"]
        lines += ["", f"## 1. Test PSNR against training time ({tr['scene']}, "
                  f"{tr['resolution']})", "",
                  f"Evaluated on {n_eval} of {tr['test_views_total']} test views (every "
                  f"{tr['test_every']}th), white background. Curve: one run per model with a "
                  f"{max(tr['budgets']):g} s budget, paused at each time for evaluation; its "
                  "learning-rate schedule is set by that budget, so earlier points are PSNR "
                  "within that run, not the result of a run with the shorter budget. Target: a "
                  "separate run with its own budget. Training seconds exclude evaluation.", "",
                  "| model | run | train s | steps | test PSNR | SSIM | views | eval s/view |",
                  "|---|---|---|---|---|---|---|---|"]
        for kind, m in tr["models"].items():
            for p in m["curve"]:
                lines.append(f"| {kind} | {max(tr['budgets']):g} s run at {p['mark_s']:g} s | "
                             f"{p['train_s']:.1f} | {p['steps']} | {p['psnr']:.2f} | "
                             f"{p['ssim']:.4f} | {p['views']} | {p['eval_s_per_view']:.3f} |")
        if "target_run" in tr:
            t = tr["target_run"]
            lines.append(f"| {t['model']} | separate {t['budget_s']:g} s run | {t['train_s']:.1f} "
                         f"| {t['steps']} | {t['psnr']:.2f} | {t['ssim']:.4f} | {t['views']} | "
                         f"{t['eval_s_per_view']:.3f} |")
        lines += ["", "| model | parameters | MLP precision | backends | warm-up run |",
                  "|---|---|---|---|---|"]
        for kind, m in tr["models"].items():
            backends = ", ".join([f"{k.replace('_backend', '').replace('_', ' ')} {v}"
                                  for k, v in m.items() if "backend" in k] +
                                 ([f"hash grid ran {m['encoder_path']}"]
                                  if "encoder_path" in m else [])) or "-"
            lines.append(f"| {kind} | {m['num_params']:,} | {m['decoder_precision']} "
                         f"({m['mlp_dtype']}) | {backends} | {m['warmup_steps']} steps + one "
                         f"view, {m['warmup_wall_s']:.1f} s wall |")
    if hs:
        lines += ["", f"## 2. Hash encoding forward + backward (L={hs['levels']}, "
                  f"F={hs['features']}, uniform points)", "",
                  "| T | points | implementation | ms (median) | min ms | samples/s | warm-up s "
                  "| peak MiB |", "|---|---|---|---|---|---|---|---|"]
        for r in hs["rows"]:
            if "samples_per_s" not in r:
                lines.append(f"| 2^{r['log2_table']} | 2^{r['log2_points']} | {r['mode']}: "
                             f"{r['note']} | - | - | - | - | - |")
                continue
            lines.append(f"| 2^{r['log2_table']} | 2^{r['log2_points']} | {r['note']} | "
                         f"{r['median_ms']:.3f} | {r['min_ms']:.3f} | {r['samples_per_s']:.3g} "
                         f"| {r['warmup_s']:.1f} | {_fmt(r['peak_mib'], '.0f')} |")
    if tr:
        lines += ["", "## 3. Render time of one frame (first test camera, scaled)", "",
                  "| model | trained s | size | median ms | min ms | frames |",
                  "|---|---|---|---|---|---|"]
        for kind, m in tr["models"].items():
            f = m["render"]
            lines.append(f"| {kind} | {m['curve'][-1]['train_s']:.1f} | {f['size']} | "
                         f"{f['median_ms']:.1f} | {f['min_ms']:.1f} | {f['frames']} |")
    lines += ["", "## 4. Peak GPU memory (torch.cuda.max_memory_allocated, reset per part)", ""]
    if dry:
        lines.append("Not measured on the CPU.")
    else:
        lines += ["| part | peak MiB |", "|---|---|"]
        if tr:
            for kind, m in tr["models"].items():
                for part, mib in m["peak_mib"].items():
                    lines.append(f"| {part} {kind} | {_fmt(mib, '.0f')} |")
            if "target_run" in tr:
                t = tr["target_run"]
                lines.append(f"| train {t['model']} ({t['budget_s']:g} s run) | "
                             f"{_fmt(t['peak_mib'], '.0f')} |")
        if hs:
            for r in hs["rows"]:
                if r.get("peak_mib") is not None:
                    lines.append(f"| hash {r['mode']} T=2^{r['log2_table']} "
                                 f"N=2^{r['log2_points']} | {r['peak_mib']:.0f} |")
    return "\n".join(lines) + "\n"
