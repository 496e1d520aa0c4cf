"""What a DLV search reports: each grid searched, each round, each confirmed example, and the
search's verdict with what it guarantees (search.py fills them in)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .grid import Example
from .hidden_search import HiddenReport
from .lattice import LatticeGrid
from .lifting import LiftReport
from .manipulations import Manipulation
from .verdict import Verdict


@dataclass
class GridRecord:
    """One grid searched: where (round, the kept point it started from), on what, and how it ended."""

    round: int
    path: int                          # index of the kept point it was searched around
    dims: list[int]                    # features moved in this grid (pixel family)
    grid_points: int
    points_evaluated: int
    verdict: Verdict
    evaluator: str
    seconds: float                     # setup (evaluator tables) included
    search_seconds: float              # evaluating and checking points
    manipulation: Manipulation = field(repr=False)   # for lifting a safe grid to a continuous verdict
    lift: LiftReport | None = None     # how much of the continuous region it spans was proven
    earlier_points: int = 0            # of points_evaluated, those an earlier run evaluated (a resumed search)

    @property
    def safe(self) -> bool:
        return self.verdict == Verdict.SAFE_ON_GRID

    def summary(self) -> dict[str, Any]:
        return {"round": self.round, "path": self.path, "dims": self.dims, "grid_points": self.grid_points,
                "points_evaluated": self.points_evaluated, "verdict": self.verdict.value, "safe": self.safe,
                "evaluator": self.evaluator, "seconds": round(self.seconds, 4),
                "search_seconds": round(self.search_seconds, 4), "lift": self.lift and self.lift.summary(),
                "earlier_points": self.earlier_points}


@dataclass
class RoundRecord:
    round: int
    features: int                      # features moved after this round (per path)
    grids: int
    points_evaluated: int
    examples: int
    best_margin: float | None          # smallest margin of the points kept for the next round

    def summary(self) -> dict[str, Any]:
        return {"round": self.round, "features": self.features, "grids": self.grids,
                "points_evaluated": self.points_evaluated, "examples": self.examples,
                "best_margin": self.best_margin}


@dataclass
class Found:
    """A confirmed adversarial example, its distances measured from the original input."""

    example: Example                   # c indexes `dims`
    dims: list[int]                    # the features the manipulation moved, in c's order
    round: int
    input_file: str | None = None     # the npz ExampleWriter wrote: the example, exactly
    png_file: str | None = None       # its PNG (images), the example itself only when png_exact
    png_exact: bool | None = None     # the PNG, read back, is exactly the example's input
    off_grid: bool = False             # found by the verifier between grid points (lifting): c is empty
    layer: str | None = None           # found at this hidden layer: dims and c index its values

    def summary(self) -> dict[str, Any]:
        return {"input_file": self.input_file, "png_file": self.png_file, "png_exact": self.png_exact,
                "round": self.round, "dims": self.dims, "off_grid": self.off_grid,
                "layer": self.layer,
                **self.example.summary()}


@dataclass
class SearchReport:
    """How a DLV search ended, how far it got and how fast."""

    verdict: Verdict
    label: int
    grid_points: int                   # points of the grids searched
    points_evaluated: int
    seconds: float
    examples: list[Found]
    rounds: list[RoundRecord]
    grids: list[GridRecord]
    rejected: int = 0                  # grid examples that failed the final confirmation (expected 0)
    reason: str = ""
    guarantee: str = ""                # what the verdict guarantees, and what it does not
    hidden: list[HiddenReport] = field(default_factory=list)   # per hidden-layer grid: region, refinement, candidates
    examples_found: int = 0            # confirmed examples; `examples` holds the first max_examples of them
    grid: LatticeGrid | None = None    # the lattice and span the pixel grids used (None: not a pixel search)

    @property
    def examples_not_kept(self) -> int:
        """Examples found beyond the cap on examples kept: counted, not reported (nor saved)."""
        return self.examples_found - len(self.examples)

    @property
    def cells(self) -> tuple[int, int] | None:
        """(cells proven, cells) of the continuous regions of the grids lifted; None if none was."""
        lifted = [g.lift for g in self.grids if g.lift is not None]
        return (sum(r.proven for r in lifted), sum(r.cells for r in lifted)) if lifted else None

    @property
    def earlier_points(self) -> int:
        """Points a resumed search took from the run it went on from, not evaluated again."""
        return sum(g.earlier_points for g in self.grids)

    @property
    def points_per_second(self) -> float:
        """End to end: feature selection, evaluator setup and confirmation included (this run's points)."""
        return (self.points_evaluated - self.earlier_points) / self.seconds if self.seconds > 0 else 0.0

    @property
    def evaluation_points_per_second(self) -> float:
        """Grid evaluation alone (enumeration, evaluator, checks), the figure the grid engine is tuned for."""
        seconds = sum(g.search_seconds for g in self.grids)
        return (self.points_evaluated - self.earlier_points) / seconds if seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {"verdict": self.verdict.value, "label": self.label, "grid_points": self.grid_points,
                "points_evaluated": self.points_evaluated, "earlier_points": self.earlier_points,
                "seconds": round(self.seconds, 4), "points_per_second": round(self.points_per_second, 1),
                "evaluation_points_per_second": round(self.evaluation_points_per_second, 1), "reason": self.reason,
                "guarantee": self.guarantee, "cells": self.cells and dict(zip(("proven", "total"), self.cells)),
                "layer": self.hidden[0].layer if self.hidden else None,
                "hidden_candidates": sum(h.candidates for h in self.hidden),
                "spurious": sum(h.spurious for h in self.hidden), "hidden": [h.summary() for h in self.hidden],
                "rejected": self.rejected, "examples_found": self.examples_found,
                **(self.grid.summary() if self.grid else {}),
                "examples_not_kept": self.examples_not_kept, "examples": [f.summary() for f in self.examples],
                "rounds": [r.summary() for r in self.rounds], "grids": [g.summary() for g in self.grids]}
