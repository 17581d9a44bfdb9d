"""Progress bars for long work (rich, on stderr; silent when FIELDKIT_QUIET=1)."""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from typing import TypeVar

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

T = TypeVar("T")
_console = Console(stderr=True)


def quiet() -> bool:
    return os.environ.get("FIELDKIT_QUIET", "") not in ("", "0")


def make_progress(**fields: str) -> Progress:
    """A rich Progress with bar, count, elapsed and remaining time, plus free-form fields."""
    extra = [TextColumn(f"{{task.fields[{k}]}}") for k in fields]
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), *extra,
                    console=_console, disable=quiet(), transient=False)


def progress_iter(items: Iterable[T], total: int, desc: str) -> Iterator[T]:
    """Yield from ``items`` while showing a progress bar of ``total`` steps (none when there
    is nothing to do)."""
    if total <= 0:
        yield from items
        return
    with make_progress() as bar:
        task = bar.add_task(desc, total=total)
        for item in items:
            yield item
            bar.advance(task)


def building(what: str):
    """A spinner saying ``what`` is being done while the block runs (a one-off build); it
    goes away after."""
    return nullcontext() if quiet() else _console.status(what)
