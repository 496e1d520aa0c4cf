"""Searching at a hidden layer: DLV's layer-by-layer propagation (METHOD 4; issue 4 item 5).

- eta_0 is the input region: the box the input-layer manipulation spans (`lifting.cell_boxes` hull).
- eta_k, the region of the layer (condition 1, containment): sound bounds of the layer's values over
  eta_0 (`BoundPropagator`), tightened for the chosen hidden dimensions by Z3, which minimises and
  maximises each over the exact encoding of the steps before the layer. Only an optimum Z3 proves
  replaces a bound, so eta_k always contains the image of eta_0.
- The hidden dimensions are the layer's best by DLV's activation heuristic; each gets the span
  sp_p = max(a_p - lo_p, hi_p - a_p) / m, so its 2m+1 grid values cover eta_k along p (clipped to it).
- Condition 2 (refinement), restricted to the chosen dimensions: one input manipulation step (one
  manipulated input dimension moved by the input span, both points in eta_0) moves each chosen hidden
  dimension by at most its span plus a tolerance. Checked by Z3 on two copies of the prefix encoding:
  unsat "holds", sat "fails", else "unknown".
- The grid over the chosen dimensions (the others at the input's own activation) is evaluated by the
  steps after the layer, in float64 numpy, points nearest the base first (`grid.grid_points`). A
  misclassified hidden point is a candidate only.
- Back-mapping: Z3 looks for an input in eta_0 whose values on the chosen hidden dimensions equal
  the candidate's exactly (exact rationals, ReLUs encoded exactly). Exact equality, not "within the
  cell": it makes "spurious" mean exactly that the point lies outside the image of eta_0 on those
  dimensions, with no tolerance to choose. The other hidden dimensions cannot be pinned too (that is
  almost never feasible), so the input found is run by onnxruntime: only a misclassification it
  confirms, inside eta_0 exactly, is an adversarial example. A preimage the network still classifies
  as the label is "unconfirmed"; unsat is "spurious", never an example; a Z3 timeout is "unknown".
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

import numpy as np
import z3

from . import confirm, encode, z3_solver
from .bounds import BoundPropagator
from .budget import Deadline
from .errors import SmtVerifyError
from .features import activation_ranking
from .grid import Example, GridReport, grid_points
from .lifting import cell_boxes
from .manipulations import PixelManipulation, distinct_levels
from .network import Network
from .chain import Chain, chain_of
from .verdict import Verdict
from .vnnlib import float_toward
from .z3_watchdog import interrupt_after

EVALUATOR = "hidden layer: later steps in float64 numpy"
CHUNK = 4096
MIN_Z3_SECONDS = 0.05              # a Z3 query is not started with less time left than this


@dataclass
class HiddenSettings:
    """The knobs of one hidden-layer search."""

    layer: str
    features: int = 3                  # hidden dimensions in the grid
    steps: int = 2                     # hidden grid: c in -steps..steps
    candidates: int = 16               # at most this many candidates back-mapped
    candidate_timeout: float = 2.0     # Z3 seconds per candidate
    region_timeout: float = 2.0        # Z3 seconds per tightened bound of eta_k
    refinement_timeout: float = 5.0
    tolerance: float = 0.0             # refinement: allowed excess over one hidden span


@dataclass
class HiddenReport:
    """What a hidden-layer search found and how sure each part is."""

    layer: str
    dims: list[int]                    # hidden dimensions (flat indices into the layer's values)
    span: list[float]
    lower: list[float]                 # eta_k on the chosen dimensions
    upper: list[float]
    tightened: int                     # bounds of eta_k Z3 proved tighter than the propagated ones
    refinement: str                    # holds | fails | unknown
    candidates: int = 0                # misclassified hidden grid points
    checked: int = 0                   # candidates back-mapped (at most the cap)
    confirmed: int = 0
    spurious: int = 0
    unconfirmed: int = 0
    unknown: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"layer": self.layer, "hidden_dims": self.dims, "span": self.span, "region_lower": self.lower,
                "region_upper": self.upper, "region_tightened": self.tightened, "refinement": self.refinement,
                "hidden_candidates": self.candidates, "checked": self.checked, "confirmed": self.confirmed,
                "spurious": self.spurious, "unconfirmed": self.unconfirmed, "unknown": self.unknown,
                "seconds": round(self.seconds, 4)}


def boundary(chain: Chain, layer: str) -> int:
    """The step boundary holding the layer's values, or an error naming the layers that have one."""
    stop = chain.boundaries.get(layer)
    if stop is None or stop == len(chain.steps):
        usable = [name for name, k in chain.boundaries.items() if k < len(chain.steps)]
        raise SmtVerifyError(f"'{layer}' is not a hidden layer boundary of the chain; use one of {', '.join(usable)}",
                             file=chain.network.path, field="layer")
    return stop


def _optimum(encoding: encode.Encoding, term: z3.ArithRef, maximise: bool, timeout: float) -> float | None:
    """The exact optimum of a term over the encoding (rounded outward), None when Z3 gives none."""
    opt = z3.Optimize()
    opt.set("timeout", max(1, int(timeout * 1000)))
    opt.add(encoding.constraints)
    handle = opt.maximize(term) if maximise else opt.minimize(term)
    with interrupt_after(timeout):
        answer = opt.check()
    value = handle.value() if answer == z3.sat else None
    if value is None or not z3.is_rational_value(value):
        return None
    return float_toward(Fraction(value.numerator_as_long(), value.denominator_as_long()), up=maximise)


def _free_constants(terms: list[z3.ExprRef]) -> list[z3.ExprRef]:
    """The variables of an encoding (inputs, ReLU and max outputs, rounding errors)."""
    seen, found, stack = set(), [], list(terms)
    while stack:
        t = stack.pop()
        if t.get_id() in seen:
            continue
        seen.add(t.get_id())
        if z3.is_const(t) and t.decl().kind() == z3.Z3_OP_UNINTERPRETED:
            found.append(t)
        else:
            stack.extend(t.children())
    return found


def _refinement(encoding: encode.Encoding, input_dims: np.ndarray, input_span: np.ndarray, dims: np.ndarray,
                span: np.ndarray, tolerance: float, timeout: float) -> str:
    """Condition 2 on the chosen dimensions: is there x, x' in eta_0 one input step apart (x' = x +
    sp_q e_q, q manipulated) whose hidden values differ by more than span + tolerance on a chosen
    dimension? (One direction suffices: the pair (x', x) is the step back.)"""
    variables = _free_constants(encoding.constraints + encoding.outputs)
    renamed = [(v, z3.Real(f"{v.decl().name()}'")) for v in variables]
    copy = [z3.substitute(c, *renamed) for c in encoding.constraints]
    xs, ys = encoding.inputs, encoding.outputs
    xs2, ys2 = [z3.substitute(x, *renamed) for x in xs], [z3.substitute(y, *renamed) for y in ys]
    one_step = z3.Or([z3.And([xs2[j] == xs[j] + z3.RealVal(Fraction(float(sp))) if j == q else xs2[j] == xs[j]
                              for j in input_dims]) for q, sp in zip(input_dims, input_span)])
    excess = z3.Or([z3.Or(ys2[p] - ys[p] > limit, ys[p] - ys2[p] > limit)
                    for p, limit in zip(dims, (z3.RealVal(Fraction(float(s + tolerance))) for s in span))])
    solver = z3.Solver()
    solver.set("timeout", max(1, int(timeout * 1000)))
    solver.add(encoding.constraints + copy + [one_step, excess])
    with interrupt_after(timeout):
        answer = solver.check()
    return "holds" if answer == z3.unsat else "fails" if answer == z3.sat else "unknown"


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
        self.prefix = self.chain.prefix(self.stop)
        self.reports: list[HiddenReport] = []
        self.deadline = Deadline()         # the current search's

    def search(self, manipulation: PixelManipulation, label: int, max_points: int | None, deadline: Deadline,
               collect_all: bool, on_example: Callable[[Example], None]) -> GridReport:
        """Search the hidden grid over the input region `manipulation` spans; every example is
        confirmed by onnxruntime inside that region and handed to `on_example` as it is found.
        Every Z3 query gets at most the time left before `deadline`; none is started past it (a
        bound not tightened stays the propagated one, refinement stays unknown, a candidate not
        back-mapped is unknown), and the grid stops at it."""
        start = time.perf_counter()
        self.deadline = deadline
        s = self.settings
        (box_lo,), (box_hi,) = cell_boxes(manipulation, 1)
        bounds = BoundPropagator(self.chain).forward(box_lo[None], box_hi[None])
        exact_box = (tuple(map(Fraction, box_lo.tolist())), tuple(map(Fraction, box_hi.tolist())))
        encoding = encode.encode_chain(self.prefix, exact_box, [(lo[0], hi[0]) for lo, hi in
                                                               zip(bounds.lower[:self.stop], bounds.upper[:self.stop])])
        base = self.prefix.forward(manipulation.original.reshape(1, -1).astype(np.float64))[0]
        dims = activation_ranking(self.network, manipulation.original, s.layer)[:s.features]
        lower, upper = bounds.lower[self.stop][0][dims].copy(), bounds.upper[self.stop][0][dims].copy()
        tightened = 0
        for i, p in enumerate(dims):
            for values, maximise in ((lower, False), (upper, True)):
                seconds = self._z3_seconds(s.region_timeout)
                best = None if seconds is None else _optimum(encoding, encoding.outputs[p], maximise, seconds)
                if best is not None and (best < values[i] if maximise else best > values[i]):
                    values[i], tightened = best, tightened + 1
        base_p = np.clip(base[dims], lower, upper)
        span = np.maximum(base_p - lower, upper - base_p) / s.steps
        seconds = self._z3_seconds(s.refinement_timeout)
        refinement = "unknown" if seconds is None else _refinement(
            encoding, manipulation.dims, manipulation.span, dims, span, s.tolerance, seconds)
        report = HiddenReport(s.layer, dims.tolist(), span.tolist(), lower.tolist(), upper.tolist(), tightened,
                              refinement)
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
            for i in np.flatnonzero(logits[:, label] <= others):
                report.candidates += 1
                if report.checked < s.candidates:
                    found = self._back_map(encoding, grid.apply(c[i:i + 1])[0], dims, manipulation, c[i], label,
                                           box_lo, box_hi, report)
                    if found is not None:
                        examples.append(found)
                        on_example(found)
                if examples and not collect_all:
                    break
            if examples and not collect_all:
                break
        end = time.perf_counter()
        report.seconds = end - start
        verdict, reason = self._verdict(report, examples, evaluated, grid.size)
        return GridReport(verdict, examples, label, grid.size, evaluated, end - start, end - search_start,
                          EVALUATOR, reached, reason=reason, examples_found=len(examples))

    def _z3_seconds(self, limit: float) -> float | None:
        """A Z3 query's time: its own limit, cut to the time left; None when too little is left."""
        seconds = min(limit, self.deadline.left())
        return seconds if seconds >= MIN_Z3_SECONDS else None

    def _suffix(self, values: np.ndarray) -> np.ndarray:
        for step in self.chain.steps[self.stop:]:
            values = step.forward(values)
        return values

    def _back_map(self, encoding: encode.Encoding, point: np.ndarray, dims: np.ndarray,
                  manipulation: PixelManipulation, c: np.ndarray, label: int, box_lo: np.ndarray,
                  box_hi: np.ndarray, report: HiddenReport) -> Example | None:
        """An input of eta_0 with the candidate's values on the chosen dimensions, if it is adversarial."""
        report.checked += 1
        timeout = self._z3_seconds(self.settings.candidate_timeout)
        if timeout is None:
            report.unknown += 1
            return None
        target = z3.And([encoding.outputs[p] == z3.RealVal(Fraction(float(point[p]))) for p in dims])
        with interrupt_after(timeout):
            status, x = z3_solver.decide(encoding, target, timeout)
        if status == "unsat":
            report.spurious += 1
            return None
        if status != "sat":
            report.unknown += 1
            return None
        cex = confirm.confirm_misclassification(self.network, x, label, box_lo, box_hi)
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
