"""Verdicts: a closed set of states, each saying what it guarantees.

A counterexample from a solver or an attack is only a candidate until the independent executor
confirms it; only a confirmed one makes a verdict UNSAFE.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Verdict(str, Enum):
    SAFE = "SAFE"                   # no point of the continuous region is unsafe (proof)
    SAFE_ON_GRID = "SAFE_ON_GRID"   # every grid point evaluated, none unsafe
    UNSAFE = "UNSAFE"               # a confirmed counterexample
    UNKNOWN = "UNKNOWN"             # a budget ran out, or the method cannot decide
    TIMEOUT = "TIMEOUT"
    ERROR = "ERROR"

    @property
    def vnncomp(self) -> str:
        """The competition's word: sat means a counterexample exists."""
        return {"SAFE": "unsat", "UNSAFE": "sat", "TIMEOUT": "timeout", "ERROR": "error"}.get(self.value, "unknown")


SAFE_GUARANTEE = ("complete on the continuous region: proven by sound bounds (float64 with an a-priori "
                  "rounding-error allowance), LP bounds certified by weak duality with outward rounding, and Z3 "
                  "over exact rationals of the stored weights; the network "
                  "itself runs in float32, so margins below the reported smallest proven margin are not "
                  "protected against float32 rounding")
GRID_GUARANTEE = ("exhaustive on the grid: every grid point evaluated (float32 evaluators; every misclassified or "
                  "near-tie point re-run by onnxruntime in float32 and numpy in float32 and float64); nothing is "
                  "claimed between grid points")
HIDDEN_GRID_GUARANTEE = ("exhaustive on the hidden-layer grid (the layers after it in float64 numpy, the hidden region "
                         "sound: propagated bounds tightened by LP bounds certified by weak duality): no grid point is "
                         "misclassified, or every one that is has no input in the input region reaching it on the "
                         "chosen dimensions (proven: a sound bound, a certified LP bound, or branch and bound over "
                         "certified LP leaves); nothing is claimed about the inputs themselves")
CONTINUOUS_GUARANTEE = ("the region is the continuous one each grid spans (pixel family: its manipulated dimensions "
                        "between their smallest and largest grid values, the others at the grid's base point; "
                        "brightness and contrast: the boxes between adjacent images, which hold the continuous path); "
                        + SAFE_GUARANTEE)
UNSAFE_GUARANTEE = ("counterexample inside the region (float32 values, checked exactly against the bounds) and "
                    "confirmed by onnxruntime in float32")


@dataclass
class Result:
    """The outcome of one decision, with what it guarantees and how far the search got."""

    verdict: Verdict
    guarantee: str = ""
    counterexample: Any = None          # a confirm.Counterexample when UNSAFE
    seconds: float = 0.0
    min_margin: float | None = None     # smallest proven margin over the leaves (SAFE)
    stats: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    def summary(self) -> dict[str, Any]:
        record = {"verdict": self.verdict.value, "vnncomp": self.verdict.vnncomp, "seconds": round(self.seconds, 4),
                  "guarantee": self.guarantee, "stats": self.stats}
        if self.min_margin is not None:
            record["min_margin"] = self.min_margin
        if self.reason:
            record["reason"] = self.reason
        return record
