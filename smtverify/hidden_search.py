"""Searching at a hidden layer: DLV's layer-by-layer propagation (METHOD 4; issue 4 item 5, issue 22
items 4 and 6).

- eta_0 is the input region: the box the input-layer manipulation spans (`lifting.cell_boxes` hull).
  It moves a few input dimensions and fixes the others at the image, so most neurons of a conv net
  are constants over it and most of the rest have a decided phase: the prefix program
  (prefix_program.py) keeps only the neurons that depend on the moved inputs, with a 0/1 column
  only per undecided phase. Every query below is on it, solved by HiGHS and trusted only where
  certified by weak duality (mixed_program.py, back_mapping.py); no Z3 query encodes the
  thousands of constant conv neurons any more (on the bundled MNIST CNN with 8 pixels at relu3,
  7,000+ neurons come down to 1,600-2,000 columns, 300-700 of them 0/1).
- eta_k, the region of the layer (condition 1, containment): sound bounds of the layer's values
  over eta_0 (`BoundPropagator`), tightened for the chosen hidden dimensions by certified LP bounds
  (only where tighter), so eta_k always contains the image of eta_0.
- The hidden dimensions are the layer's best by DLV's activation heuristic (or, with heuristic
  "gradient", by |d margin / d value| x the value's range over eta_0: those that could move the
  decision most) among those the moved inputs can change at all (a constant dimension's grid would
  be one point); each gets the span
  sp_p = max(a_p - lo_p, hi_p - a_p) / m, so its 2m+1 grid values cover eta_k along p (clipped).
- Condition 2 (refinement), restricted to the chosen dimensions: one input manipulation step moves
  each chosen hidden dimension by at most its span plus a tolerance: "holds" proven by branch and
  bound with certified LP leaves, "fails" witnessed by a pair run in float64, else "unknown".
- The grid over the chosen dimensions (the others at the input's own activation) is evaluated by the
  steps after the layer, in float64 numpy, points nearest the base first (`grid.grid_points`). A
  misclassified hidden point is a candidate only.
- Back-mapping: an input of eta_0 whose values on the chosen dimensions equal the candidate's (to
  within back_mapping.PREIMAGE_TOLERANCE, on the network run in float64). Equality, not "within the
  cell": "spurious" means exactly that the point lies outside the image of eta_0 on those
  dimensions, and it is only ever said with a proof (sound bounds, a certified LP bound, or branch
  and bound over certified LP leaves; the report counts each kind). The input found is run by
  onnxruntime: only a misclassification it confirms, inside eta_0 exactly, is an adversarial
  example. A preimage the network still classifies as the label is "unconfirmed"; neither a
  preimage nor a proof within the candidate's time is "unknown".
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import confirm
from .attack import gradient
from .back_mapping import BackMapper
from .bounds import BoundPropagator
from .budget import Deadline
from .errors import SmtVerifyError
from .features import activation_ranking
from .grid import Example, GridReport, grid_points
from .lifting import cell_boxes
from .manipulations import PixelManipulation, distinct_levels
from .network import Network
from .chain import Chain, chain_of
from .prefix_program import prefix_program
from .verdict import Verdict

EVALUATOR = "hidden layer: later steps in float64 numpy"
CHUNK = 4096
MIN_SECONDS = 0.05                 # a solver query is not started with less time left than this


@dataclass
class HiddenSettings:
    """The knobs of one hidden-layer search."""

    layer: str
    features: int = 3                  # hidden dimensions in the grid
    steps: int = 2                     # hidden grid: c in -steps..steps
    candidates: int = 16               # at most this many candidates back-mapped
    candidate_timeout: float = 2.0     # seconds per back-mapped candidate
    region_timeout: float = 2.0        # seconds for tightening eta_k
    refinement_timeout: float = 5.0
    tolerance: float = 0.0             # refinement: allowed excess over one hidden span
    nodes: int = 512                   # branch-and-bound nodes per proof (the time limits come first)
    heuristic: str = "activation"      # hidden dimensions: DLV's activation heuristic, or "gradient" (see _margin_ranking)


@dataclass
class HiddenReport:
    """What a hidden-layer search found and how sure each part is."""

    layer: str
    dims: list[int]                    # hidden dimensions (flat indices into the layer's values)
    span: list[float]
    lower: list[float]                 # eta_k on the chosen dimensions
    upper: list[float]
    tightened: int                     # bounds of eta_k certified LP bounds made tighter than the propagated ones
    refinement: str                    # holds | fails | unknown
    columns: int = 0                   # the prefix program's size: columns, of them 0/1 (undecided phases)
    binaries: int = 0
    candidates: int = 0                # misclassified hidden grid points
    checked: int = 0                   # candidates back-mapped (at most the cap)
    confirmed: int = 0
    spurious: int = 0
    unconfirmed: int = 0
    unknown: int = 0
    proofs: dict[str, int] = field(default_factory=dict)   # spurious candidates by the kind of their proof
    seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)   # region, refinement, grid, back-mapping
    records: list[dict[str, Any]] = field(default_factory=list)     # per back-mapped candidate: c, point, status, proof

    def summary(self) -> dict[str, Any]:
        return {"layer": self.layer, "hidden_dims": self.dims, "span": self.span, "region_lower": self.lower,
                "region_upper": self.upper, "region_tightened": self.tightened, "refinement": self.refinement,
                "program_columns": self.columns, "program_binaries": self.binaries,
                "hidden_candidates": self.candidates, "checked": self.checked, "confirmed": self.confirmed,
                "spurious": self.spurious, "unconfirmed": self.unconfirmed, "unknown": self.unknown,
                "spurious_proofs": dict(self.proofs), "seconds": round(self.seconds, 4),
                "phase_seconds": {k: round(v, 4) for k, v in self.phase_seconds.items()}}


def boundary(chain: Chain, layer: str) -> int:
    """The step boundary holding the layer's values, or an error naming the layers that have one."""
    stop = chain.boundaries.get(layer)
    if stop is None or stop == len(chain.steps):
        usable = [name for name, k in chain.boundaries.items() if k < len(chain.steps)]
        raise SmtVerifyError(f"'{layer}' is not a hidden layer boundary of the chain; use one of {', '.join(usable)}",
                             file=chain.network.path, field="layer")
    return stop


class HiddenGrid:
    """The grid over chosen hidden dimensions, clipped to eta_k: parameter vectors c -> layer values."""

    def __init__(self, base: np.ndarray, dims: np.ndarray, span: np.ndarray, steps: int, lower: np.ndarray,
                 upper: np.ndarray) -> None:
        self.base, self.dims, self.steps = base, dims, steps
        c = np.arange(-steps, steps + 1)
        self.value_table = np.clip(base[dims, None] + c[None, :] * span[:, None], lower[:, None], upper[:, None])
        self.levels = [distinct_levels(row, steps) for row in self.value_table]

    @property
    def size(self) -> int:
        return math.prod(len(level) for level in self.levels)

    def apply(self, c: np.ndarray) -> np.ndarray:
        values = np.broadcast_to(self.base, (len(c), len(self.base))).copy()
        values[:, self.dims] = self.value_table[np.arange(len(self.dims)), c + self.steps]
        return values


class HiddenLayerSearch:
    """One network and layer: eta_k, the hidden grid, back-mapping; `search` is called per input grid."""

    def __init__(self, network: Network, settings: HiddenSettings) -> None:
        self.network, self.settings = network, settings
        self.chain = chain_of(network)
        self.stop = boundary(self.chain, settings.layer)
        if settings.heuristic not in ("activation", "gradient"):
            raise SmtVerifyError(f"unknown hidden-layer heuristic '{settings.heuristic}'; use activation or gradient",
                                 field="heuristic")
        self.reports: list[HiddenReport] = []
        self.deadline = Deadline()         # the current search's

    def search(self, manipulation: PixelManipulation, label: int, max_points: int | None, deadline: Deadline,
               collect_all: bool, on_example: Callable[[Example], None]) -> GridReport:
        """Search the hidden grid over the input region `manipulation` spans; every example is
        confirmed by onnxruntime inside that region and handed to `on_example` as it is found.
        Every solver query gets at most the time left before `deadline`; none is started past it (a
        bound not tightened stays the propagated one, refinement stays unknown, a candidate not
        back-mapped is unknown), and the grid stops at it."""
        start = time.perf_counter()
        self.deadline = deadline
        s = self.settings
        (box_lo,), (box_hi,) = cell_boxes(manipulation, 1)
        bounds = BoundPropagator(self.chain).forward(box_lo[None], box_hi[None])
        prefix = prefix_program(self.chain, bounds, self.stop)
        mapper = BackMapper(prefix, s.nodes)
        base = prefix.chain.forward(manipulation.original.reshape(1, -1).astype(np.float64))[0]
        ranking = activation_ranking(self.network, manipulation.original, s.layer) if s.heuristic == "activation" \
            else self._margin_ranking(base, label, prefix.upper - prefix.lower)
        dims = ranking[np.argsort(prefix.columns[ranking] < 0, kind="stable")][:s.features]   # movable ones first
        clock = _Clock()
        lower, upper, tightened = mapper.region(dims, self._budget(s.region_timeout))
        clock.lap("region")
        base_p = np.clip(base[dims], lower, upper)
        span = np.maximum(base_p - lower, upper - base_p) / s.steps
        refinement = mapper.refinement(manipulation.dims, manipulation.span, dims, span, lower, upper, s.tolerance,
                                       self._budget(s.refinement_timeout))
        clock.lap("refinement")
        report = HiddenReport(s.layer, dims.tolist(), span.tolist(), lower.tolist(), upper.tolist(), tightened,
                              refinement, prefix.program.n_cols, int(prefix.program.integral.sum()))
        self.reports.append(report)
        grid = HiddenGrid(base, dims, span, s.steps, lower, upper)
        examples: list[Example] = []
        evaluated, reached, search_start = 0, (0, 0), time.perf_counter()
        for c in grid_points(grid.levels, CHUNK):
            if max_points is not None:
                c = c[:max_points - evaluated]
            if len(c) == 0 or deadline.passed():
                break
            logits = self._suffix(grid.apply(c))
            others = np.where(np.arange(logits.shape[1]) == label, -np.inf, logits).max(axis=1)
            evaluated += len(c)
            reached = (int(np.count_nonzero(c[-1])), int(np.abs(c[-1]).max(initial=0)))
            clock.lap("grid")
            for i in np.flatnonzero(logits[:, label] <= others):
                report.candidates += 1
                if report.checked < s.candidates:
                    found = self._back_map(mapper, grid.apply(c[i:i + 1])[0][dims], dims, manipulation, c[i],
                                           label, box_lo, box_hi, report)
                    if found is not None:
                        examples.append(found)
                        on_example(found)
                if examples and not collect_all:
                    break
            clock.lap("back-mapping")
            if examples and not collect_all:
                break
        end = time.perf_counter()
        report.seconds = end - start
        report.phase_seconds = clock.laps
        verdict, reason = self._verdict(report, examples, evaluated, grid.size)
        return GridReport(verdict, examples, label, grid.size, evaluated, end - start, end - search_start,
                          EVALUATOR, reached, reason=reason, examples_found=len(examples))

    def _budget(self, limit: float) -> Deadline:
        """A query's deadline: its own limit from now, or the search's if sooner."""
        return Deadline.after(limit).sooner(self.deadline)

    def _margin_ranking(self, base: np.ndarray, label: int, width: np.ndarray) -> np.ndarray:
        """The layer's dimensions by how far moving each across eta_k could move the label's margin
        over the runner-up, to first order: |d margin / d value| x the width of its bounds."""
        suffix = Chain(self.network, self.chain.steps[self.stop:], False)
        logits = suffix.forward(base[None])[0]
        direction = np.zeros(len(logits))
        direction[label] = 1.0
        direction[int(np.argmax(np.where(np.arange(len(logits)) == label, -np.inf, logits)))] = -1.0
        score = np.abs(gradient(suffix, base, direction)[0]) * width
        return np.argsort(-score, kind="stable")

    def _suffix(self, values: np.ndarray) -> np.ndarray:
        for step in self.chain.steps[self.stop:]:
            values = step.forward(values)
        return values

    def _back_map(self, mapper: BackMapper, target: np.ndarray, dims: np.ndarray,
                  manipulation: PixelManipulation, c: np.ndarray, label: int, box_lo: np.ndarray,
                  box_hi: np.ndarray, report: HiddenReport) -> Example | None:
        """An input of eta_0 with the candidate's values on the chosen dimensions, if it is adversarial."""
        report.checked += 1
        budget = self._budget(self.settings.candidate_timeout)
        answer = mapper.preimage(dims, target, manipulation.original.reshape(-1).astype(np.float64), budget) if budget.left() >= MIN_SECONDS else None
        status = "unknown" if answer is None else answer.status
        report.records.append({"c": c.tolist(), "point": target.tolist(), "status": status,
                               "proof": answer.proof if answer else "", "bound": answer.bound if answer else 0.0})
        if status == "spurious":
            report.spurious += 1
            report.proofs[answer.proof] = report.proofs.get(answer.proof, 0) + 1
            return None
        if status != "found":
            report.unknown += 1
            return None
        cex = confirm.confirm_misclassification(self.network, answer.x, label, box_lo, box_hi)
        report.records[-1]["status"] = "confirmed" if cex is not None else "unconfirmed"
        if cex is None:
            report.unconfirmed += 1
            return None
        report.confirmed += 1
        return Example.of(cex.input, manipulation.original, c.astype(np.int64), label, cex.output)

    def _verdict(self, report: HiddenReport, examples: list[Example], evaluated: int,
                 size: int) -> tuple[Verdict, str]:
        if examples:
            return Verdict.UNSAFE, ""
        if evaluated < size:
            why = "the timeout ran out" if self.deadline.passed() else "the budget ran out"
            return Verdict.UNKNOWN, f"{why}: {evaluated} of {size} hidden grid points evaluated"
        open_ = report.candidates - report.spurious
        if open_:
            return Verdict.UNKNOWN, (f"{report.candidates} hidden candidates, none confirmed: {report.spurious} "
                                     f"spurious, {report.unconfirmed} unconfirmed, {report.unknown} unknown, "
                                     f"{report.candidates - report.checked} not back-mapped (cap)")
        return Verdict.SAFE_ON_GRID, ""


class _Clock:
    """Seconds spent per phase, summed over the laps that end in each."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.laps[phase] = self.laps.get(phase, 0.0) + now - self.last
        self.last = now
