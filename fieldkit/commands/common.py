"""What the subcommands share: tyro's argument markers and two helpers."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import tyro

Positional = tyro.conf.Positional
Crop = Annotated[tuple[float, float, float, float, float, float] | None,
                 tyro.conf.arg(metavar="X0 Y0 Z0 X1 Y1 Z1")]
"""``--crop``: a box in box coordinates (``fieldkit.render.crop.CropBox.from_flat``)."""


def report_eval(run_dir: Path) -> None:
    """Evaluate a run on its test views and print the one-line summary."""
    from fieldkit.train.evaluate import evaluate_run

    print_metrics(Path(run_dir) / "metrics.json", evaluate_run(run_dir))


def print_metrics(path: Path, m: dict) -> None:
    """The one-line summary of an evaluation written to ``path``."""
    cc = f" (colour-corrected {m['psnr_cc']:.2f})" if "psnr_cc" in m else ""
    print(f"metrics    {path}: PSNR {m['psnr']:.2f} dB{cc}, SSIM {m['ssim']:.4f} on "
          f"{m['num_views']} {m['split']} views")


def serve_until_ctrl_c(live) -> None:
    """Keep a finished run's viewer up until Ctrl-C."""
    import time

    print(f"viewer     still serving {live.viewer.url}; Ctrl-C to quit", flush=True)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        live.viewer.stop()
