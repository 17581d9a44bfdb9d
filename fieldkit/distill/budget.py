"""How many of a distillation's target renders fit in its time budget.

A teacher's render time varies by two orders of magnitude between scenes and kinds (on this
CPU: 0.1 s a 200 x 200 view for splats of lego, ~6 s a 135 x 240 view for a hash grid of fox),
so a fixed number of teacher views or rays can take ten times the whole ``--max-time``. The
renders that make training targets (the views of a splat student, the ray bank of a field
student) get a share of the budget instead: the first render is timed, and as many more are
made as fit, never fewer than a minimum that keeps the student usable, never more than asked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class RenderBudget:
    """Seconds a distillation's target renders may take (None: no limit), and what was cut."""

    seconds: float | None = None
    """The limit on the renders' wall time (None: render everything asked for)."""
    spent: float = 0.0
    """Seconds the budgeted renders have taken so far."""
    fixed: dict[str, int] = field(default_factory=dict)
    """Counts decided before (a resumed distillation's), used whatever the time: key -> count."""
    made: dict[str, int] = field(default_factory=dict)
    """Every count decided: key -> count (saved with the run, so that a resume renders the
    same targets)."""
    cuts: list[dict] = field(default_factory=list)
    """Per render set cut short: {"what", "asked", "made", "seconds_each"}."""

    def count(self, key: str, what: str, asked: int, minimum: int, seconds_each: float) -> int:
        """How many of ``asked`` renders (``what``, e.g. "novel views") costing
        ``seconds_each`` fit in what is left: at least ``min(minimum, asked)``, at most
        ``asked`` (``fixed[key]`` when given); a cut is recorded."""
        if key in self.fixed:
            made = min(asked, self.fixed[key])
        elif self.seconds is None or asked <= 0:
            made = asked
        else:
            left = self.seconds - self.spent
            fit = math.floor(left / seconds_each) if seconds_each > 0 else asked
            made = max(min(minimum, asked), min(asked, fit))
            if made < asked:
                self.cuts.append({"key": key, "what": what, "asked": asked, "made": made,
                                  "seconds_each": seconds_each})
        self.made[key] = made
        return made

    def exhausted(self, key: str) -> bool:
        """Whether the renders have spent the seconds, so that ``key``'s should stop before
        their count (an estimate from earlier renders; this VM's speed drifts): never
        without a limit or with a count decided before."""
        return self.seconds is not None and key not in self.fixed and self.spent >= self.seconds

    def stop(self, key: str, what: str, asked: int, made: int) -> None:
        """``key``'s renders stopped at ``made`` (``exhausted``), fewer than counted: record it
        as a cut, at the seconds each took."""
        self.made[key] = made
        self.cuts = [c for c in self.cuts if c.get("key") != key]
        self.cuts.append({"key": key, "what": what, "asked": asked, "made": made,
                          "seconds_each": self.spent / max(made, 1)})

    def add(self, seconds: float) -> None:
        """Count ``seconds`` of budgeted rendering."""
        self.spent += seconds

    def summary(self) -> str | None:
        """One line on what the budget cut (None when nothing was)."""
        if not self.cuts:
            return None
        parts = [f"{c['made']} of {c['asked']} {c['what']} ({c['seconds_each']:.2g} s each)"
                 for c in self.cuts]
        return ("the teacher's target renders were cut to fit the time budget: "
                + "; ".join(parts) + ". A longer --max-time gives the student more targets.")
