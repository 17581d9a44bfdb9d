"""Benchmark: Gaussian splats at the size of real 3DGS files (millions of Gaussians) on the CPU:
render time and peak memory of one view, the mixture's density at the distillation's 2^19
points, and a whole `fieldkit distill FILE.ply --to hashgrid`.

    .venv/bin/python apps/bench_splat_scale.py --splat-run runs/lego_splat \
        --scene ../shared/scenes/lego-400 --downscale 2 --out apps/results/splat_scale_cpu

The large file is made from a trained splat run: its Gaussians exported as a 3DGS .ply (world
units), each replaced by ``--replicas`` copies jittered by one standard deviation and shrunk
by replicas^(1/3) (the same volume, ~the same look, 100x the Gaussians: lego's 23k become
2.3M, the size of a real capture's 3DGS file). Each measurement runs in a process of its own,
so its peak resident memory is its own.

- render: one 200 x 200 view looking at the object, without gradients, by the path before
  (every (Gaussian, pixel) pair of the view at once: ``bin_tiles`` + ``composite``) and by
  ``rasterize``'s render path (``splat_render``: depth-sorted batches, hidden Gaussians
  skipped).
- mixture: ``mixture_density`` at 2^19 points, half near Gaussians, half uniform in their box.
- distill: the whole command, wall time and peak memory, and its report.
- export: `fieldkit export` of the file alone (no run): to .spz and to a web page, and a TSDF
  mesh from the scene's cameras; for the large file and for the run's own (small) .ply.

Expected before the run (after profiling the 2.3M file): render about 1.9 s against 5.3 s,
memory bounded by the batches; before these changes, distilling such a file ran out of 24 GiB.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from stamp import command

ROOT = Path(__file__).resolve().parents[1]


def make_large(splat_run: Path, replicas: int, out: Path) -> int:
    """The run's Gaussians, each as ``replicas`` jittered, shrunk copies, as a 3DGS .ply."""
    from fieldkit.export.run import export_run
    from fieldkit.splats.ply import read_splat_ply, write_splat_ply
    small = out.with_name("small.ply")
    export_run("splats", splat_run, small)
    p = read_splat_ply(small)
    g = torch.Generator().manual_seed(0)
    n = len(p["means"])
    std = p["scales"].exp()
    parts = {k: [] for k in p}
    for _ in range(replicas):
        parts["means"].append(p["means"] + torch.randn(n, 3, generator=g) * std)
        parts["scales"].append(p["scales"] - math.log(replicas) / 3)
        for k in ("quats", "opacities", "sh0", "shN"):
            parts[k].append(p[k])
    write_splat_ply(out, {k: torch.cat(v) for k, v in parts.items()})
    return n * replicas


def view_camera(means: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A camera looking at the Gaussians' median centre from 2.5 times their spread."""
    centre = means.median(0).values
    spread = (means.quantile(0.95, 0) - means.quantile(0.05, 0)).norm()
    eye = centre + spread * 2.5 * torch.nn.functional.normalize(torch.tensor([0.3, -1.0, 0.6]),
                                                                dim=0)
    fwd = torch.nn.functional.normalize(centre - eye, dim=0)
    right = torch.nn.functional.normalize(torch.linalg.cross(fwd, torch.tensor([0, 0, 1.0])),
                                          dim=0)
    down = torch.linalg.cross(fwd, right)
    R = torch.stack([right, down, fwd])
    view = torch.eye(4)
    view[:3, :3], view[:3, 3] = R, -R @ eye
    f = size / (2 * math.tan(math.radians(40) / 2))
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])
    return view, K


def child(what: str, ply: Path, size: int) -> dict:
    from fieldkit.render import splat as S
    from fieldkit.splats.mixture import mixture_density
    from fieldkit.splats.ply import read_splat_ply
    p = read_splat_ply(ply)
    opac, std = torch.sigmoid(p["opacities"]), p["scales"].exp()
    colors = (p["sh0"][:, 0] * 0.28209479177387814 + 0.5).clamp(0, 1)
    view, K = view_camera(p["means"], size)
    t0 = time.perf_counter()
    with torch.no_grad():
        if what == "mixture":
            g = torch.Generator().manual_seed(0)
            n = 1 << 19
            idx = torch.randint(len(opac), (n // 2,), generator=g)
            near = p["means"][idx] + torch.randn(n // 2, 3, generator=g) * std[idx]
            lo, hi = p["means"].min(0).values, p["means"].max(0).values
            pts = torch.cat([near, lo + (hi - lo) * torch.rand(n // 2, 3, generator=g)])
            t0 = time.perf_counter()
            value = float(mixture_density(pts, p["means"], p["quats"], std, opac).mean())
        else:
            proj = S.project(p["means"], p["quats"], std, opac, view, K, size, size)
            if what == "render_before":
                bins = S.bin_tiles(proj, size, size)
                out = S.composite(proj, bins, colors, size, size)
            else:
                out, _ = S.rasterize(p["means"], p["quats"], std, opac, colors, view, K, size,
                                     size)
            value = float(out["alpha"].mean())
    return {"seconds": time.perf_counter() - t0, "value": value,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def run_child(what: str, ply: Path, size: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", what, "--ply", str(ply),
                          "--size", str(size)], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        return {"failed": out.stderr.strip().splitlines()[-1:] or [f"rc {out.returncode}"]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_distill(ply: Path, scene: str, downscale: int, max_time: float, out: Path) -> dict:
    cmd = [str(ROOT / ".venv/bin/fieldkit"), "distill", str(ply), "--to", "hashgrid",
           "--scene", scene, "--downscale", str(downscale), "--max-time", str(max_time),
           "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "peak_kib %M"] + cmd, capture_output=True,
                          text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    peak = [ln for ln in proc.stderr.splitlines() if ln.startswith("peak_kib ")]
    res = {"command": " ".join(["fieldkit"] + cmd[1:]), "wall_seconds": wall,
           "peak_rss_gib": int(peak[-1].split()[1]) / 2**20 if peak else None,
           "rc": proc.returncode,
           "warnings": [ln for ln in proc.stderr.splitlines() if "warning" in ln.lower()]}
    if proc.returncode == 0:
        rep = json.loads((out / "distill.json").read_text())
        res.update(vs_teacher=rep["vs_teacher"]["psnr"], time=rep["time"],
                   teacher_vs_photos=rep["vs_photos"]["teacher"]["psnr"],
                   student_vs_photos=rep["vs_photos"]["student"]["psnr"],
                   teacher_seconds_per_frame=rep["teacher_seconds_per_frame"],
                   targets=rep["targets"])
    else:
        res["error"] = proc.stderr.strip().splitlines()[-2:]
    return res


EXPORTS = {
    "spz": ["splats", "{ply}", "--out", "{work}/{name}.spz"],
    "html": ["splats", "{ply}", "--out", "{work}/{name}.html"],
    "mesh": ["mesh", "{ply}", "--out", "{work}/{name}_mesh.ply", "--scene", "{scene}",
             "--downscale", "{downscale}"],
}
"""`fieldkit export` of a splat file alone, as a user with another trainer's file runs it."""


def run_exports(plys: dict[str, Path], scene: str, downscale: int, work: Path) -> dict:
    out = {}
    for name, ply in plys.items():
        for what, args in EXPORTS.items():
            cmd = [str(ROOT / ".venv/bin/fieldkit"), "export"] + [a.format(
                ply=ply, work=work, name=name, scene=scene, downscale=downscale) for a in args]
            t0 = time.perf_counter()
            proc = subprocess.run(["/usr/bin/time", "-f", "peak_kib %M"] + cmd,
                                  capture_output=True, text=True, cwd=ROOT)
            peak = [ln for ln in proc.stderr.splitlines() if ln.startswith("peak_kib ")]
            said = [ln for ln in proc.stdout.splitlines() if ln.startswith(("splats", "mesh"))]
            out[f"{name}_{what}"] = {
                "command": " ".join(["fieldkit"] + cmd[1:]), "rc": proc.returncode,
                "wall_seconds": time.perf_counter() - t0,
                "peak_rss_gib": int(peak[-1].split()[1]) / 2**20 if peak else None,
                "summary": said[-1] if said else proc.stderr.strip().splitlines()[-2:]}
            print(name, what, out[f"{name}_{what}"], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splat-run", type=Path, default=Path("runs/lego_splat"))
    ap.add_argument("--replicas", type=int, default=100)
    ap.add_argument("--scene", default="../shared/scenes/lego-400")
    ap.add_argument("--downscale", type=int, default=2)
    ap.add_argument("--max-time", type=float, default=120)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--work", type=Path, default=Path("runs/splat_scale"))
    ap.add_argument("--out", type=Path, default=Path("apps/results/splat_scale_cpu"))
    ap.add_argument("--only", nargs="+", default=None,
                    help="measure only these (render_before render mixture distill export), keeping the "
                         "others from OUT/bench.json")
    ap.add_argument("--child", default=None)
    ap.add_argument("--ply", type=Path, default=None)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.ply, args.size)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    big = args.work / "large.ply"
    n = make_large(args.splat_run, args.replicas, big)
    kept = json.loads((args.out / "bench.json").read_text()) if args.only else {}
    results = {**kept, "date": datetime.date.today().isoformat(), "machine": platform.machine(),
               "threads": torch.get_num_threads(), "torch": torch.__version__,
               "command": command(), "gaussians": n,
               "ply_mib": big.stat().st_size / 2**20}
    wanted = args.only or ["render_before", "render", "mixture", "distill", "export"]
    for what in ("render_before", "render", "mixture"):
        if what in wanted:
            results[what] = run_child(what, big, args.size)
            print(what, results[what], flush=True)
    if "distill" in wanted:
        student = args.work / "student"
        if student.exists():
            import shutil
            shutil.rmtree(student)
        results["distill"] = run_distill(big, args.scene, args.downscale, args.max_time,
                                         student)
        print("distill", results["distill"], flush=True)
    if "export" in wanted:
        results["export"] = run_exports({"small": args.work / "small.ply", "large": big},
                                        args.scene, args.downscale, args.work)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
