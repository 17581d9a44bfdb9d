"""Timing and peak memory for the GPU benchmarks (apps/bench_gpu.py): CUDA events and
``torch.cuda.max_memory_allocated`` on a GPU, perf_counter (and no memory) on the CPU."""
from __future__ import annotations

import contextlib
import time

import torch


class Clock:
    """Seconds of one piece of work: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    @contextlib.contextmanager
    def time(self, out: list[float]):
        if self.cuda:
            start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
            yield
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            yield
            out.append(time.perf_counter() - t0)


class PeakMemory:
    """Peak GPU memory per named part (MiB); parts may be entered several times (max kept).
    Nothing on the CPU (``torch.cuda.max_memory_allocated`` has no CPU counterpart)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.peaks: dict[str, float] = {}

    @contextlib.contextmanager
    def part(self, name: str):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize()
                mib = torch.cuda.max_memory_allocated() / 2**20
                self.peaks[name] = max(self.peaks.get(name, 0.0), mib)

    def get(self, name: str) -> float | None:
        return self.peaks.get(name)


def _free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
