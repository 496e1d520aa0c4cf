"""The time budget of a search: one deadline that every phase polls.

A search's `--timeout` must hold whatever the grid: feature selection, building an evaluator's
tables, evaluating and checking points, lifting and the hidden-layer phase each poll the same
absolute deadline between units of work small enough to end well within a second of it. A phase
deep in a loop that finds the deadline passed raises `OutOfTime`; the phase that owns the loop
turns it into an UNKNOWN verdict (or a fallback) with what was evaluated so far.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass


class OutOfTime(Exception):
    """The deadline passed during `phase`: what the phase was building is incomplete."""

    def __init__(self, phase: str) -> None:
        super().__init__(f"the timeout ran out while {phase}")
        self.phase = phase


@dataclass(frozen=True)
class Deadline:
    """An absolute time on the `time.perf_counter` clock; infinite when there is no timeout."""

    at: float = math.inf

    @classmethod
    def after(cls, seconds: float | None, start: float | None = None) -> "Deadline":
        """`seconds` after `start` (default now); None gives a deadline that never passes."""
        if seconds is None:
            return cls()
        return cls((time.perf_counter() if start is None else start) + max(0.0, seconds))

    def left(self) -> float:
        """Seconds left (never negative; infinite without a timeout)."""
        return max(0.0, self.at - time.perf_counter())

    def passed(self) -> bool:
        return time.perf_counter() >= self.at

    def check(self, phase: str) -> None:
        """Raise OutOfTime(phase) once the deadline has passed."""
        if self.passed():
            raise OutOfTime(phase)

    def share(self, fraction: float) -> "Deadline":
        """A sooner deadline: `fraction` of the time left from now (itself when it is infinite)."""
        left = self.at - time.perf_counter()
        return self if math.isinf(left) else Deadline(self.at - (1.0 - fraction) * max(0.0, left))

    def sooner(self, other: "Deadline") -> "Deadline":
        return self if self.at <= other.at else other
