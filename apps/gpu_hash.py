"""Part 2 of apps/bench_gpu.py: ``HashGrid`` forward + backward throughput, our torch twin eager
and under ``torch.compile``, against tiny-cuda-nn's HashGrid when it imports."""
from __future__ import annotations

import dataclasses
import math
import statistics

import torch

from gpu_timing import Clock, PeakMemory, _free


def _grid_config(log2_table: int):
    """HashGridConfig at T with the torch twin forced eager where the config has such fields
    (newer versions pick tiny-cuda-nn / torch.compile by themselves on CUDA)."""
    from fieldkit.encoders.hashgrid import HashGridConfig

    names = {f.name for f in dataclasses.fields(HashGridConfig)}
    extra = {k: v for k, v in {"backend": "torch", "compile": "off"}.items() if k in names}
    return HashGridConfig(log2_table_size=log2_table, **extra)


def _tcnn_encoding(config, device: torch.device):
    """tiny-cuda-nn's HashGrid with the same levels, features, table size and growth factor."""
    import tinycudann as tcnn

    L = config.num_levels
    scale = 1.0 if L == 1 else math.exp(
        (math.log(config.max_resolution) - math.log(config.base_resolution)) / (L - 1))
    enc = tcnn.Encoding(3, {"otype": "HashGrid", "n_levels": L,
                            "n_features_per_level": config.features_per_level,
                            "log2_hashmap_size": config.log2_table_size,
                            "base_resolution": config.base_resolution,
                            "per_level_scale": scale})
    return enc.to(device)


def _hash_mode(mode: str, log2_table: int, device: torch.device):
    """(callable x -> features, the module whose parameters get gradients, note) or a str
    saying why ``mode`` cannot run here."""
    from fieldkit.encoders.hashgrid import HashGrid

    if mode == "tcnn":
        try:
            import tinycudann  # noqa: F401
        except Exception as err:
            return f"skipped: import tinycudann failed ({type(err).__name__}: " \
                   f"{' '.join(str(err).split())[:120]})"
        if device.type != "cuda":
            return "skipped: tiny-cuda-nn needs CUDA"
        enc = _tcnn_encoding(_grid_config(log2_table), device)
        dtype = str(getattr(enc, "dtype", "?")).replace("torch.", "")
        return enc, enc, f"tiny-cuda-nn HashGrid, {dtype} output"
    torch.manual_seed(0)
    grid = HashGrid(_grid_config(log2_table), impl="fused").to(device)
    if mode == "eager":
        return grid, grid, "HashGrid(impl='fused'), eager"
    torch._dynamo.reset()
    grid(torch.rand(16, 3, device=device))  # one eager call first (lazy per-device setup)
    return torch.compile(grid, dynamic=False), grid, "torch.compile(HashGrid, dynamic=False)"


def bench_hash(args, device: torch.device, mem: PeakMemory) -> dict:
    clock = Clock(device)
    rows = []
    for log2_table in args.log2_table:
        for log2_n in args.points:
            n = 2**log2_n
            g = torch.Generator(device="cpu").manual_seed(0)
            x = torch.rand(n, 3, generator=g).to(device)
            for mode in ("eager", "compiled", "tcnn"):
                row = {"log2_table": log2_table, "log2_points": log2_n, "mode": mode}
                name = f"hash {mode} T=2^{log2_table} N=2^{log2_n}"
                try:
                    with mem.part(name):
                        made = _hash_mode(mode, log2_table, device)
                        if isinstance(made, str):
                            row["note"] = made
                            rows.append(row)
                            print(f"[hash] 2^{log2_n} {mode}: {made}", flush=True)
                            continue
                        fn, module, note = made
                        params = list(module.parameters())
                        up = None

                        def step():
                            nonlocal up
                            for p in params:
                                p.grad = None
                            out = fn(x)
                            if up is None:
                                up = torch.randn(out.shape, generator=g).to(device, out.dtype)
                            out.backward(up)

                        warm: list[float] = []
                        for _ in range(args.hash_warmup):
                            with clock.time(warm):
                                step()
                        times: list[float] = []
                        for _ in range(args.hash_steps):
                            with clock.time(times):
                                step()
                    ms = statistics.median(times) * 1e3
                    row.update(note=note, median_ms=ms, min_ms=min(times) * 1e3,
                               samples_per_s=n / (ms / 1e3), warmup_s=sum(warm),
                               steps=args.hash_steps, peak_mib=mem.get(name))
                    print(f"[hash] 2^{log2_n} {mode}: {ms:.2f} ms, {n / ms * 1e3:.3g} samples/s",
                          flush=True)
                except Exception as err:  # a compile or tcnn failure must not stop the rest
                    text = " ".join(str(err).split())[:160]
                    row["note"] = f"failed: {type(err).__name__}: {text}"
                    print(f"[hash] 2^{log2_n} {mode}: {row['note']}", flush=True)
                rows.append(row)
                made = fn = module = params = None
                _free(device)
    return {"rows": rows, "levels": 16, "features": 2}
