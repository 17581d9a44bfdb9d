"""Where and when a benchmark ran, for its results: the date, the machine and the exact command.

    from stamp import command, machine, stamp

    meta = {**stamp(), "rows": rows}   # {"date": ..., "machine": ..., "command": ...}
"""
from __future__ import annotations

import datetime
import platform
import shlex
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    """E.g. ``x86_64, 2 threads, torch 2.13.0+cpu, no GPU``; the GPU's name when CUDA is up."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
            f"{gpu}")


def command() -> str:
    """The command line that ran: ``python SCRIPT ARGS...``, the script relative to the repository
    root where it lies inside it, shell-quoted."""
    script = sys.argv[0]
    if script and Path(script).is_file():
        try:
            script = str(Path(script).resolve().relative_to(REPO))
        except ValueError:
            pass
    return shlex.join(["python", script, *sys.argv[1:]])


def stamp() -> dict[str, str]:
    """``{"date": ISO date, "machine": machine(), "command": command()}``."""
    return {"date": datetime.date.today().isoformat(), "machine": machine(), "command": command()}
