"""Input splitting: depth-first branch and bound on the input box, for inputs of few dimensions.

Each round bounds both halves of a batch of open boxes along a few candidate dimensions in one
call (within their parents' neuron bounds), keeps the split whose worse half bounds best
(input_branching.py), raises open halves' margins with optimised slopes, and sends boxes with few
unstable ReLUs to the LP and Z3 (leaves.py). Still open after a small share of the time, the
root's neuron bounds are tightened by LP and splitting goes on within them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .. import lp
from ..bounds import ChainBounds
from ..lp import LpRelaxation
from . import falsify, leaves
from .context import Job
from .input_branching import candidates, halves, split_dimension
from .neuron_bounds import LayerBounds, intersected, layer_bounds
from .objective import SlopeRows, UnsafeRows
from .outcome import OUT_OF_TIME, PROVEN, SPLIT, Decision, Why, found, stopped
from .root import slope_margins


class OpenBox(NamedTuple):
    """A box of input splitting still to decide."""

    lo: np.ndarray
    hi: np.ndarray
    margin: float                   # its bound when it was made (-inf for the root)
    layers: LayerBounds             # every step's input bounds, to bound its halves within
    scores: np.ndarray | None       # per free dimension, what splitting it stands to gain (None: unknown)


@dataclass
class Halves:
    """A batch's boxes' halves along their candidate dimensions (flat: pair, half)."""

    lo: np.ndarray                  # (2P, n) for P (box, dimension) pairs
    hi: np.ndarray
    bounds: ChainBounds
    row_lower: np.ndarray           # (2P, R)
    coefficients: np.ndarray        # (2P, R, n)
    margins: np.ndarray             # (B, D, 2) per box and free dimension (-inf: not a candidate)
    widths: np.ndarray              # (B, D) each free dimension's width, relative to the root box
    candidate: np.ndarray           # (B, D) bool: its halves were bounded
    pair: np.ndarray                # (B, D) their pair's index (flat halves 2p and 2p+1)

    def gains(self, free: np.ndarray) -> np.ndarray:
        """Per half, row and free dimension: |coefficient| times width, the linear bound's gain
        from splitting that dimension (up to the factor 2)."""
        return np.abs(self.coefficients[:, :, free]) * (self.hi - self.lo)[:, None, free]


def split_with_lp(job: Job, rows: UnsafeRows, root: ChainBounds, deadline: float) -> Decision:
    """Input splitting; if it is still open after a small share of the time, the root's neuron
    bounds are tightened by LP and splitting goes on with the boxes left open, within them.
    Where back-substitution blows up through the layers, that decides at once what splitting
    could not (ACAS Xu 4_9/prop_3: a root margin of -8.7 became +0.07 in 1.5 s)."""
    box, settings, stats = job.case.box, job.settings, job.stats
    stack = [OpenBox(box.lower.copy(), box.upper.copy(), -np.inf, layer_bounds(root, 0), None)]
    stats.proven_share, stats.splitting = 0.0, "input"
    if not lp.supports(job.chain):
        return split(job, rows, stack, deadline)
    start = time.perf_counter()
    decision = split(job, rows, stack, min(deadline, start + settings.input_split.lp_after * settings.timeout))
    if decision.why is not Why.OUT_OF_TIME or time.perf_counter() > deadline:
        return decision
    job.report("deep falsification", open=len(stack))
    counterexample = falsify.deep(job, deadline)
    if counterexample is not None:
        return found(counterexample)
    job.report("LP tightening", open=len(stack))
    relaxation = LpRelaxation(job.chain, box.lower, box.upper)
    stats.lp = True
    root, decision = leaves.tighten(job, relaxation, root, start + settings.bounds.lp_tighten_share * (deadline - start))
    if decision.found:
        return decision
    margin = rows.margins(job.tools.bounds.lower_bound_rows(root, rows.A))[0]
    if margin > 0:
        stats.leaves += 1
        stats.min_margin = min(stats.min_margin, margin)
        stats.proven_share = 1.0
        return PROVEN
    tight = layer_bounds(root, 0)
    stack = [open_box._replace(layers=intersected(open_box.layers, tight)) for open_box in stack]
    return split(job, rows, stack, deadline, relaxation)


def split(job: Job, rows: UnsafeRows, stack: list[OpenBox], deadline: float,
          relaxation: LpRelaxation | None = None) -> Decision:
    """Depth-first branch and bound from the open boxes of `stack` (left with those still open
    when time runs out, so a later call can go on with them). Adds the share of the box's volume
    proven to the statistics' proven_share, for a timeout to report."""
    settings, stats, box = job.settings.input_split, job.stats, job.case.box
    free = np.flatnonzero(box.upper > box.lower)
    root_width = (box.upper - box.lower)[free]
    slope_rows = SlopeRows.of(job.case)
    per_box = settings.candidates
    per_call = max(1, settings.batch_halves // (2 * (per_box if 0 < per_box < len(free) else max(1, len(free)))))
    # A round takes the boxes whose halves end by the deadline at the last round's seconds a
    # half: a round of a big net's boxes (hundreds of halves) overran it by seconds.
    rounds, per_half = 0, 0.0
    while stack:
        began = time.perf_counter()
        rounds += 1
        if rounds % job.settings.falsify.local_attack_every == 0:
            counterexample = falsify.in_boxes(job, worst_boxes(stack, job.settings.falsify.local_attack_boxes))
            if counterexample is not None:
                return found(counterexample)
        count = min(per_call, int((deadline - time.perf_counter()) / (per_half * 2 * len(free) + 1e-12)))
        if count < 1 or time.perf_counter() > deadline:
            return OUT_OF_TIME
        if stats.leaves > job.settings.leaves.max_leaves:
            return stopped(Why.LEAF_LIMIT)
        job.report("input splitting", open=len(stack))
        batch = stack[-count:]
        del stack[-count:]
        decision, bounded = split_round(job, rows, slope_rows, batch, stack, free, root_width, deadline, relaxation)
        if decision.found:
            return decision
        per_half = (time.perf_counter() - began) / bounded
    return PROVEN


def split_round(job: Job, rows: UnsafeRows, slope_rows: SlopeRows, batch: list[OpenBox], stack: list[OpenBox],
                free: np.ndarray, root_width: np.ndarray, deadline: float, relaxation: LpRelaxation | None
                ) -> tuple[Decision, int]:
    """One round: the batch's boxes split, their halves closed, decided at a leaf or pushed on
    `stack`. (a counterexample or SPLIT, how many halves were bounded)."""
    stats = job.stats
    halves = bound_halves(job, batch, free, root_width, rows)
    counterexample = try_corners(job, halves)
    if counterexample is not None:
        return found(counterexample), len(halves.lo)
    B = len(batch)
    parent = np.array([open_box.margin for open_box in batch])
    pick = split_dimension(halves.margins, parent, halves.widths, halves.candidate)
    chosen = halves.margins[np.arange(B), pick]                              # (B, 2)
    indices = (halves.pair[np.arange(B), pick] * 2)[:, None] + np.arange(2)  # of the chosen halves
    closing = optimised_margins(job, slope_rows, halves.bounds, indices, chosen, deadline)
    still_open = indices[closing <= 0]
    counterexample = falsify.confirm_unsafe(job, list((halves.lo[still_open] + halves.hi[still_open]) / 2))
    if counterexample is not None:
        return found(counterexample), len(halves.lo)
    scores = rows.deciding_gains(halves.row_lower, halves.gains(free))
    settings = job.settings.input_split
    gained = ~np.isfinite(parent) | (chosen.min(axis=1) - parent > settings.guess_gain * np.abs(parent))
    at_leaf = (halves.bounds.unstable_relus(job.chain) <= settings.leaf_relus) & job.tools.exact_leaves
    # Push the most promising boxes for a counterexample (most negative margin) last, so
    # depth-first search visits them first; every box is closed either way.
    for i, half in sorted(np.ndindex(B, 2), key=lambda t: -chosen[t]):
        index = indices[i, half]
        lo, hi = halves.lo[index], halves.hi[index]
        share = float(np.prod((hi - lo)[free] / root_width))
        if closing[i, half] > 0:
            stats.leaves += 1
            stats.min_margin = min(stats.min_margin, closing[i, half])
            stats.proven_share += share
            continue
        decision = (leaves.box_leaf(job, halves.bounds, index, lo, hi, deadline, relaxation)
                    if at_leaf[index] and time.perf_counter() <= deadline else SPLIT)
        if decision.proven:
            stats.proven_share += share
        elif decision.found:
            return decision, len(halves.lo)
        else:
            guessed = scores[index] if gained[i] else None
            stack.append(OpenBox(lo, hi, chosen[i, half], layer_bounds(halves.bounds, index), guessed))
    return SPLIT, len(halves.lo)


def worst_boxes(stack: list[OpenBox], count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The open boxes whose bounds are worst: where a counterexample most likely is."""
    worst = sorted(range(len(stack)), key=lambda i: stack[i].margin)[:count]
    return [(stack[i].lo, stack[i].hi) for i in worst]


def bound_halves(job: Job, batch: list[OpenBox], free: np.ndarray, root_width: np.ndarray, rows: UnsafeRows
                 ) -> Halves:
    """Both halves of each box along each of its candidate dimensions, bounded in one call
    within their parent's layer bounds (so splitting never loosens a layer)."""
    lo = np.stack([open_box.lo for open_box in batch])
    hi = np.stack([open_box.hi for open_box in batch])
    widths = (hi - lo)[:, free] / root_width
    candidate = candidates(widths, [open_box.scores for open_box in batch], job.settings.input_split.candidates)
    owner, dim = np.nonzero(candidate)                                 # one (box, dimension) per pair
    child_lo, child_hi = halves(lo[owner], hi[owner], free[dim])      # (P, 2, n)
    within = tuple([np.repeat(np.stack([open_box.layers[side][k] for open_box in batch])[owner], 2, axis=0)
                    for k in range(len(job.chain.steps))] for side in (0, 1))
    flat_lo, flat_hi = child_lo.reshape(-1, lo.shape[1]), child_hi.reshape(-1, lo.shape[1])
    bounds = job.tools.bounds.forward(flat_lo, flat_hi, within=within)
    row_lower, coefficients = job.tools.bounds.lower_bound_rows_with(bounds, rows.A)
    job.stats.boxes_bounded += flat_lo.shape[0]
    pair = np.full(candidate.shape, -1)
    pair[owner, dim] = np.arange(len(owner))
    margins = np.full(candidate.shape + (2,), -np.inf)
    margins[owner, dim] = rows.margins(row_lower).reshape(-1, 2)
    return Halves(flat_lo, flat_hi, bounds, row_lower, coefficients, margins, widths, candidate, pair)


def optimised_margins(job: Job, slope_rows: SlopeRows, bounds: ChainBounds, indices: np.ndarray,
                      margins: np.ndarray, deadline: float) -> np.ndarray:
    """The margins of boxes `indices` of a batch, raised where they are open by optimising
    the output rows' ReLU slopes (the margins kept in the search stay back-substitution's, so
    the choice of split dimension compares like with like). Measured on 1 000 open boxes of
    ACAS Xu 3_3/prop_2 (10 steps): closes 27% of them at 0.5 ms a box, where back-substitution
    closed none."""
    open_boxes = margins <= 0
    steps = job.settings.input_split.slope_steps
    if job.tools.slope_optimiser is None or steps <= 0 or not np.any(open_boxes):
        return margins
    raised = margins.copy()
    raised[open_boxes] = np.maximum(margins[open_boxes],
                                    slope_margins(job, slope_rows, bounds.subset(indices[open_boxes]), deadline, steps))
    return raised


def try_corners(job: Job, halves: Halves):
    """Each open box's corner minimising its worst row's linear bound: one batch through the
    chain, the unsafe ones confirmed (sat instances whose counterexamples sit in tiny regions
    are found by the boxes closing in on them, long before attacks hit them)."""
    worst = np.argmin(halves.row_lower, axis=1)
    open_boxes = np.flatnonzero(halves.row_lower[np.arange(len(worst)), worst] <= 0)
    if len(open_boxes) == 0:
        return None
    c = halves.coefficients[open_boxes, worst[open_boxes]]
    points = np.where(c > 0, halves.lo[open_boxes], halves.hi[open_boxes])
    return falsify.confirm_unsafe(job, list(points))
