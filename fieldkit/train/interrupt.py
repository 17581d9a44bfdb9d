"""Ctrl-C as a request to stop, for training and distillation.

While ``stop_on_ctrl_c()`` is active (in the main thread), the first Ctrl-C only sets a flag:
the trainer finishes its step, writes a checkpoint and returns. A second Ctrl-C raises
KeyboardInterrupt at once. The train and distill commands enter it before their set-up, so a
Ctrl-C that lands while the scene loads or torch imports its compiler does not break off the
set-up half-way (an interrupted import can leave the interpreter unable to exit): set-up
finishes, the trainer sees the request, saves a step-0 checkpoint and stops.

Re-entrant: ``Trainer.train`` enters it too, and an outer request carries into it.
"""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

_state = {"depth": 0, "requested": False}


def requested() -> bool:
    """True after a first Ctrl-C inside the outermost active ``stop_on_ctrl_c()``."""
    return bool(_state["requested"])


def _on_sigint(signum, frame) -> None:
    if _state["requested"]:  # second Ctrl-C: stop now
        raise KeyboardInterrupt
    _state["requested"] = True
    print("\nstopping at the next safe point; Ctrl-C again to quit at once", file=sys.stderr,
          flush=True)


def stop_here_if_requested() -> None:
    """A safe point of a long set-up loop: KeyboardInterrupt if Ctrl-C was pressed."""
    if _state["requested"]:
        raise KeyboardInterrupt


@contextmanager
def stop_on_ctrl_c() -> Iterator[None]:
    """Turn the first Ctrl-C into ``requested()`` while active. Outside the main thread (where
    Python delivers no signals) it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outermost = _state["depth"] == 0
    previous = None
    if outermost:
        _state["requested"] = False
        previous = signal.signal(signal.SIGINT, _on_sigint)
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if outermost:
            signal.signal(signal.SIGINT, previous)
            _state["requested"] = False
