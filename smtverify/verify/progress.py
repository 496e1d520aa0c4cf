"""Progress of a decision as it runs: which phase, how much is open, how much is proven, against
the clock. The engines report at their natural steps (a round of boxes, a batch of domains); the
listener (a progress bar, a log) is called at most every `interval` seconds and at every change
of phase, so a fast loop pays one clock read per step."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from .outcome import Statistics


@dataclass(frozen=True)
class Snapshot:
    """What a decision has done so far."""

    phase: str                   # "falsification", "root bounds", "input splitting", "LP tightening", ...
    case: int                    # 1-based, of `cases`
    cases: int
    elapsed: float               # seconds since the decision began
    timeout: float
    leaves: int                  # boxes or domains closed so far
    open: int | None = None      # boxes or domains still open, where the phase keeps a stack
    proven_share: float | None = None   # input splitting: the share of the case's box proven


Listener = Callable[[Snapshot], None]


class ProgressReporter:
    """Turns the engines' frequent updates into a listener's occasional snapshots."""

    def __init__(self, listener: Listener, timeout: float, cases: int, interval: float = 0.25) -> None:
        self.listener = listener
        self.timeout = timeout
        self.cases = cases
        self.interval = interval
        self.start = time.perf_counter()
        self.case = 1
        self.phase = ""
        self.last = -float("inf")

    def update(self, phase: str, stats: Statistics, open: int | None = None) -> None:
        now = time.perf_counter()
        if phase == self.phase and now - self.last < self.interval:
            return
        self.phase, self.last = phase, now
        self.listener(Snapshot(phase, self.case, self.cases, now - self.start, self.timeout, stats.leaves, open,
                               stats.proven_share))

    def finish(self, stats: Statistics) -> None:
        """The last snapshot, phase "done", always sent (a bar can close on it)."""
        self.phase = ""
        self.update("done", stats)
