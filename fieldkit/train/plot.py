"""PNG plot of training and held-out PSNR against training time (from log.jsonl)."""
from __future__ import annotations

import io
import json
from pathlib import Path

from fieldkit.train.checkpoint import atomic_write_bytes


def plot_psnr(log_path: Path, out_path: Path) -> Path | None:
    """Draw PSNR vs seconds from ``log_path``; returns the PNG path, or None without data."""
    if not log_path.exists():
        return None
    train, held_out = [], []
    for line in log_path.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if "psnr" in rec:
            train.append((rec["elapsed"], rec["psnr"]))
        if "eval_psnr" in rec:
            held_out.append((rec["elapsed"], rec["eval_psnr"]))
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(*zip(*train), lw=1, alpha=0.7, label="train batch")
    if held_out:
        ax.plot(*zip(*held_out), "o-", lw=1.5, label="held-out views")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(out_path, buf.getvalue())
    return out_path
