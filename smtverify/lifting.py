"""From grid to continuous: proving the region a safe grid spans (METHOD 3 minimality, 5; issue 4 item 6).

A grid with no example says nothing about the points between its points. The region a pixel grid
spans is a box: each manipulated dimension between its smallest and largest grid value (the values
are clipped to the domain, so the box is too), every other dimension at the grid's base point. The
certification engine (bounds, LP, Z3 over exact rationals) is asked to prove that box keeps the
label. When the whole box is not proven within its share of the time, it is cut into the cells
between adjacent grid values (blocks of adjacent cells when there are more than the cell budget) and
each cell is tried in turn: all proven is SAFE on the continuous region, otherwise the grid stays
SAFE_ON_GRID with the count of cells proven. A counterexample the verifier finds in a cell is a real
adversarial example between grid points, confirmed by onnxruntime inside the cell.

Brightness and contrast move every pixel monotonically with their parameter, so the box between two
adjacent images contains the continuous path between them: their cells are those boxes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import confirm
from .manipulations import Manipulation, MonotoneWholeInputManipulation, PixelManipulation
from .network import Network
from .verdict import Verdict
from .verify import Verifier, robustness_property
from .vnnlib import Case, InputBox, Property

HULL_SHARE = 0.5   # of a grid's lifting time, for the whole box before it is cut into cells
MIN_SECONDS = 0.05 # a box is not tried with less time than this: the verifier needs some to start


@dataclass
class LiftReport:
    """How much of the continuous region a grid spans was proven safe."""

    cells: int                     # the region was cut into this many boxes (1: the hull itself)
    proven: int                    # boxes proven SAFE
    hull_proven: bool
    seconds: float
    min_margin: float | None       # smallest proven margin over the proven boxes (float rounding below it)
    counterexamples: list[confirm.Counterexample] = field(default_factory=list)

    @property
    def continuous(self) -> bool:
        """Every point of the continuous region is proven to keep the label."""
        return self.proven == self.cells and not self.counterexamples

    def summary(self) -> dict[str, Any]:
        return {"cells": self.cells, "cells_proven": self.proven, "hull_proven": self.hull_proven,
                "continuous": self.continuous, "counterexamples": len(self.counterexamples),
                "min_margin": self.min_margin, "seconds": round(self.seconds, 4)}


def _breakpoints(n_intervals: list[int], budget: int) -> list[np.ndarray]:
    """Per parameter, the indices of the grid values kept as cell borders: cells are refined along
    the parameter with the widest cells first, while their number stays within the budget."""
    parts = [1] * len(n_intervals)
    while True:
        open_ = [p for p, n in enumerate(n_intervals) if parts[p] < n]
        if not open_:
            break
        p = max(open_, key=lambda q: (n_intervals[q] / parts[q], -q))
        if np.prod(parts, dtype=np.float64) / parts[p] * (parts[p] + 1) > budget:
            break
        parts[p] += 1
    return [np.round(np.linspace(0, n, k + 1)).astype(np.int64) for n, k in zip(n_intervals, parts)]


def cell_boxes(manipulation: Manipulation, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """The boxes (lower, upper), each (N, n_inputs) float64, of at most `budget` cells that together
    cover the continuous region the grid spans; budget 1 gives the hull."""
    if isinstance(manipulation, PixelManipulation):
        values = [np.unique(manipulation.value_table[p, level + manipulation.offset]).astype(np.float64)
                  for p, level in enumerate(manipulation.levels)]
        borders = _breakpoints([len(v) - 1 for v in values], budget)
        # every combination of one cell per dimension, the first dimension slowest
        choice = np.indices([len(b) - 1 for b in borders]).reshape(len(borders), -1).T
        base = manipulation.original.reshape(-1).astype(np.float64)
        lower, upper = np.tile(base, (len(choice), 1)), np.tile(base, (len(choice), 1))
        for p, (v, b) in enumerate(zip(values, borders)):
            lower[:, manipulation.dims[p]] = v[b[choice[:, p]]]
            upper[:, manipulation.dims[p]] = v[b[choice[:, p] + 1]]
        return lower, upper
    if isinstance(manipulation, MonotoneWholeInputManipulation):
        order = np.sort(manipulation.levels[0])
        images = manipulation.images[order + manipulation.offset].reshape(len(order), -1).astype(np.float64)
        b = _breakpoints([len(order) - 1], budget)[0]
        spans = [images[i:j + 1] for i, j in zip(b[:-1], b[1:])]
        return np.stack([s.min(axis=0) for s in spans]), np.stack([s.max(axis=0) for s in spans])
    raise ValueError("a user-supplied family has no known continuous region to prove")


def _box_property(network: Network, case: Case, lower: np.ndarray, upper: np.ndarray) -> Property:
    """The robustness condition of `case` over one box (float32 grid values: exact as given)."""
    box = InputBox.from_floats(lower, upper)
    return Property(network.path, network.n_inputs, network.n_outputs, (Case(box, case.unsafe),))


def lift(verifier: Verifier, manipulation: Manipulation, label: int, timeout: float, max_cells: int) -> LiftReport:
    """Prove the continuous region of a safe grid: the hull first, then its cells, within `timeout`
    seconds in all. Stops at the first counterexample (confirmed strictly misclassified inside its box)."""
    start = time.perf_counter()
    network = verifier.network
    case = robustness_property(network, manipulation.original, label, 0.0).cases[0]
    margins: list[float] = []
    found: list[confirm.Counterexample] = []

    def prove(lower: np.ndarray, upper: np.ndarray, seconds: float) -> bool:
        result = verifier.verify(_box_property(network, case, lower, upper), timeout=max(seconds, MIN_SECONDS))
        if result.verdict == Verdict.SAFE:
            margins.append(np.inf if result.min_margin is None else result.min_margin)
            return True
        if result.verdict == Verdict.UNSAFE:
            strict = confirm.confirm_misclassification(network, result.counterexample.input, label, lower, upper)
            if strict is not None:      # (a tie with the label is not an adversarial example)
                found.append(strict)
        return False

    def report(cells: int, proven: int, hull: bool) -> LiftReport:
        margin = min(margins) if margins and np.isfinite(min(margins)) else None
        return LiftReport(cells, proven, hull, time.perf_counter() - start, margin, found)

    if timeout < MIN_SECONDS:                 # no time left (the search's deadline): nothing proven
        return report(1, 0, False)
    hull_lower, hull_upper = cell_boxes(manipulation, 1)
    if prove(hull_lower[0], hull_upper[0], timeout * (HULL_SHARE if max_cells > 1 else 1.0)):
        return report(1, 1, True)
    lower, upper = cell_boxes(manipulation, max_cells)
    if found or len(lower) == 1:
        return report(1, 0, False)
    proven = 0
    for i in range(len(lower)):
        left = timeout - (time.perf_counter() - start)
        if left <= MIN_SECONDS or found:
            break
        proven += prove(lower[i], upper[i], left / (len(lower) - i))
    return report(len(lower), proven, False)
