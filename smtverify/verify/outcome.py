"""Typed outcomes of the engines, and the statistics a decision reports.

Every engine (falsification, input splitting, ReLU splitting, a leaf) ends in a `Decision`: proven
safe, a confirmed counterexample, or still open, with why it stopped. The why decides the verdict
(out of time: TIMEOUT; undecided or a leaf limit: UNKNOWN), so nothing reads the clock afterwards
to guess it.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, fields

import numpy as np

from ..confirm import Counterexample
from ..verdict import Verdict


class Why(enum.Enum):
    """Why an engine stopped with something still open."""

    OUT_OF_TIME = "out of time"          # the case's deadline (or no time left to ask a leaf)
    UNDECIDED = "undecided"              # an exact leaf gave up within its own limit
    LEAF_LIMIT = "leaf limit"            # Settings.leaves.max_leaves closed and still not done
    SPLIT = "to split"                   # a box or domain the engine splits further (never final)


@dataclass(frozen=True)
class Decision:
    """Proven safe, a confirmed counterexample, or open (with why)."""

    counterexample: Counterexample | None = None
    why: Why | None = None               # None: proven (when there is no counterexample)

    @property
    def proven(self) -> bool:
        return self.counterexample is None and self.why is None

    @property
    def found(self) -> bool:
        return self.counterexample is not None

    @property
    def open(self) -> bool:
        return self.why is not None

    @property
    def verdict(self) -> Verdict:
        if self.found:
            return Verdict.UNSAFE
        if self.proven:
            return Verdict.SAFE
        return Verdict.TIMEOUT if self.why is Why.OUT_OF_TIME else Verdict.UNKNOWN


PROVEN = Decision()
SPLIT = Decision(why=Why.SPLIT)
OUT_OF_TIME = Decision(why=Why.OUT_OF_TIME)


def found(counterexample: Counterexample) -> Decision:
    return Decision(counterexample=counterexample)


def stopped(why: Why) -> Decision:
    return Decision(why=why)


@dataclass
class Statistics:
    """What a decision did, for the result's `stats` (optional fields only where their engine ran)."""

    leaves: int = 0                      # boxes or domains closed
    boxes_bounded: int = 0
    z3_calls: int = 0
    z3_unsat: int = 0
    lp_solves: int = 0
    unconfirmed_candidates: int = 0      # points that looked unsafe and onnxruntime did not confirm
    random_points: int | None = None     # falsification's uniform points
    pgd_restarts: int | None = None
    splitting: str | None = None         # "input", "relu_batched" or "relu_per_node"
    deep_random_points: int | None = None
    lp: bool | None = None               # the LP stage was used
    leaves_before_refining: int | None = None
    refine_seconds: float | None = None
    open_domains: int | None = None      # ReLU splitting stopped: domains left open ...
    worst_open_margin: float | None = None   # ... and the worst lower bound of their margins (or the root's)
    proven_share: float | None = None    # input splitting: the share of the case's box proven safe
    # Kept for the engines, not reported.
    min_margin: float = np.inf           # the smallest margin that closed a leaf
    descent_seconds: float = 0.0         # ReLU splitting: time in local descent from domain corners
    root_seconds: float = 0.0            # the root's bounding, what refining leaves for one bounding after it

    INTERNAL = ("min_margin", "descent_seconds", "root_seconds")

    def as_dict(self) -> dict:
        """The reported fields that are set, in a JSON-ready form."""
        reported = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in self.INTERNAL or value is None:
                continue
            reported[f.name] = round(value, 6) if isinstance(value, float) else value
        return reported
