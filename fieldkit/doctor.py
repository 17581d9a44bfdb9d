"""``fieldkit doctor``: which devices and optional accelerated backends this machine has.

Optional packages are looked up with ``importlib.util.find_spec`` so that the report never
triggers a CUDA JIT build. The render backends (issue: CUDA acceleration) extend this report with
what they actually select.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import platform

import torch

OPTIONAL = {
    "nerfacc": "CUDA ray marching (falls back to the torch twin)",
    "gsplat": "CUDA splat rasterizer (falls back to the torch twin)",
    "tinycudann": "fused hash-grid + MLP (optional; falls back to the torch twin)",
    "viser": "browser viewer",
    "open3d": "TSDF meshing and point-cloud export",
}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def report() -> str:
    """Multi-line report of Python, torch, devices and optional packages."""
    lines = [f"python     {platform.python_version()} ({platform.machine()})",
             f"torch      {torch.__version__}, {torch.get_num_threads()} CPU threads"]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        lines.append(f"cuda       available: {', '.join(names)} (CUDA {torch.version.cuda})")
    else:
        lines.append("cuda       not available: training runs on the CPU")
    for module, role in OPTIONAL.items():
        found = importlib.util.find_spec(module) is not None
        version = _version("tinycudann" if module == "tinycudann" else module) if found else None
        state = f"installed {version or ''}".strip() if found else "not installed"
        lines.append(f"{module:<11}{state:<22}{role}")
    from fieldkit.render.backends import gsplat_status, nerfacc_status

    ok, reason = gsplat_status()  # builds gsplat's kernels only on a CUDA machine
    lines.append(f"{'splats':<11}{'gsplat' if ok else 'torch twin':<22}{reason}")
    ok, reason = nerfacc_status()  # builds nerfacc's kernels only on a CUDA machine
    lines.append(f"{'volume':<11}{'nerfacc' if ok else 'torch twin':<22}{reason}")
    from fieldkit.encoders.hashgrid_tcnn import tcnn_status

    ok, reason = tcnn_status()
    cuda = torch.cuda.is_available()
    twin = "torch twin" + (" (compiled)" if cuda else "")
    note = ("new hashgrid runs use the tcnn convention" if ok else
            reason + ("; the torch twin is compiled with torch.compile" if cuda else ""))
    lines.append(f"{'hashgrid':<11}{'tiny-cuda-nn' if ok else twin:<22}{note}")
    from fieldkit.encoders.hashgrid_fast import cpu_compile_status

    ok, reason = cpu_compile_status()
    lines.append(f"{'cpu render':<11}{'compiled' if ok else 'eager':<22}{reason}")
    from fieldkit.render.splat_cpu import cpu_blend_status

    ok, reason = cpu_blend_status()   # builds the extension the first time (~40 s)
    lines.append(f"{'cpu splats':<11}{'compiled C++' if ok else 'torch twin':<22}{reason}")
    from fieldkit.encoders.hashgrid_cpu import cpu_hashgrid_status

    ok, reason = cpu_hashgrid_status()   # builds the extension the first time (~30 s)
    lines.append(f"{'cpu hash':<11}{'compiled C++' if ok else 'torch twin':<22}{reason}")
    from fieldkit.fields.radiance import CPU_BF16_MIN_WIDTH, cpu_bf16_status

    ok, reason = cpu_bf16_status()
    lines.append(f"{'cpu mlp':<11}{'bfloat16' if ok else 'float32':<22}"
                 + (f"MLPs {CPU_BF16_MIN_WIDTH}+ wide (the mlp model) run in bf16: {reason}"
                    if ok else f"{reason}; MLPs stay float32 on the CPU"))
    return "\n".join(lines)
