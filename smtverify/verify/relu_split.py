"""ReLU splitting in batches: branch and bound on the phases of splittable neurons (beta-CROWN style).

A batch of domains keeps its parents' neuron bounds with its decided neurons clamped (near the
root it has them bounded again), then its output rows are bounded with the slopes and one
multiplier per decision optimised, which approaches the domain's LP bound at a fraction of an LP
solve's cost. A domain is split on the neuron chosen by relu_branching.py; Z3 decides domains with
few unstable neurons left. Still open after a small share of the time, the root's neuron bounds
are refined by branch and bound (refine.py) and splitting starts again within them.
"""
from __future__ import annotations

import time

import numpy as np

from ..bounds import ChainBounds
from ..slopes import SlopeSolution
from ..refine import BoundRefiner
from . import falsify, leaves
from .context import Job
from .domains import DomainRows, Node, bound_domains
from .neuron_bounds import layer_bounds
from .objective import SlopeRows
from .outcome import PROVEN, SPLIT, Decision, Why, found, stopped
from .relu_branching import filtered_smart


def split_refined(job: Job, root: ChainBounds, deadline: float) -> Decision:
    """Batched ReLU splitting; if it is still open after a small share of the time, the root's
    neuron bounds are refined by branch and bound on the neurons before them, and splitting
    starts again within those."""
    settings, stats = job.settings, job.stats
    start = time.perf_counter()
    decision = split(job, root, min(deadline, start + settings.relu_split.refine_after * settings.timeout))
    if decision.why is not Why.OUT_OF_TIME or time.perf_counter() > deadline:
        return decision
    stats.open_domains = stats.worst_open_margin = None       # of the splitting given up
    stats.leaves_before_refining = stats.leaves
    job.report("refining neuron bounds")
    refining = time.perf_counter()
    # ... ending a measured root bounding before the deadline, for splitting to use its bounds
    refiner = BoundRefiner(job.tools.bounds, job.tools.slope_optimiser, settings.refine)
    root = refiner.refined(root, min(deadline - stats.root_seconds,
                                     refining + settings.relu_split.refine_share * (deadline - start)),
                           stats.root_seconds)
    stats.refine_seconds = round(time.perf_counter() - refining, 2)
    return split(job, root, deadline)


def split(job: Job, root: ChainBounds, deadline: float) -> Decision:
    """Depth-first branch and bound on phases from the root, a batch of domains at a time."""
    settings, stats = job.settings, job.stats
    slope_rows = SlopeRows.of(job.case)
    stack: list[Node] = [Node([], layer_bounds(root, 0), np.full(len(slope_rows.group), -np.inf))]
    stats.splitting = "relu_batched"
    began, stats.descent_seconds = time.perf_counter(), 0.0     # this case's splitting only
    bounding = 0.0    # the last batch's bounding took this long: none starts that would end past the deadline
    while stack:
        if time.perf_counter() + bounding > deadline:
            return stopped_with(job, stack, slope_rows, Why.OUT_OF_TIME)
        if stats.leaves > settings.leaves.max_leaves:
            return stopped_with(job, stack, slope_rows, Why.LEAF_LIMIT)
        job.report("ReLU splitting", open=len(stack))
        batch = stack[-settings.relu_split.batch_domains:]
        del stack[-settings.relu_split.batch_domains:]
        decision, bounding = split_batch(job, slope_rows, batch, stack, deadline, began)
        if decision.why is not Why.SPLIT:
            return decision
    return PROVEN


def split_batch(job: Job, slope_rows: SlopeRows, batch: list[Node], stack: list[Node], deadline: float,
                began: float) -> tuple[Decision, float]:
    """One batch of domains bounded, refuted, decided at a Z3 leaf, or split onto `stack`.
    (SPLIT, a counterexample or why it stopped; how long the bounding took)."""
    settings, stats, tools = job.settings, job.stats, job.tools
    bounding_began = time.perf_counter()
    bounds, signs = bound_domains(job, batch, deadline)
    stats.boxes_bounded += len(batch)
    empty = bounds.empty()       # contradictory phases: nothing to decide
    domains = DomainRows.of(batch)
    solution = tools.slope_optimiser.optimise(
        bounds.subset(domains.domain), slope_rows.objective_of(domains.row[:, None]), len(job.chain.steps),
        splits={k: sign[domains.domain] for k, sign in signs.items()},
        iterations=settings.relu_split.slope_steps, start=domains.start(), deadline=deadline,
        stop=lambda v: bool(np.all((slope_rows.margins(domains.full(v)) > 0) | empty)),
        finished=lambda v: (v[:, 0] > 0) | empty[domains.domain])
    bounding = time.perf_counter() - bounding_began
    values = domains.full(solution.values)
    margins = np.where(empty, np.inf, slope_rows.margins(values))
    refuted = margins > 0
    descend = stats.descent_seconds <= settings.relu_split.corner_descent_share * (time.perf_counter() - began)
    counterexample = try_domain_corners(job, domains, solution, margins, descend)
    if counterexample is not None:
        return found(counterexample), bounding
    stats.leaves += int(np.sum(refuted))
    if np.any(refuted & ~empty):
        stats.min_margin = min(stats.min_margin, float(margins[refuted & ~empty].min()))
    costs = tools.bounds.upper_side_costs(bounds, slope_rows.worst_rows(values))
    unstable = bounds.unstable_relus(job.chain)
    open_rows = slope_rows.open_rows(values)
    split, limits = [], {}
    for i in sorted(np.flatnonzero(~refuted), key=lambda i: -margins[i]):   # the worst popped first
        if unstable[i] <= settings.leaves.relus:
            limits[i] = leaf_limit(job, batch[i], int(unstable[i]))
            decision = leaves.z3_leaf(job, bounds, i, job.case.box.lower, job.case.box.upper, deadline,
                                      batch[i].decisions, limits[i])
            if decision.proven:
                continue
            if decision.found:
                return decision, bounding
            if unstable[i] == 0:        # nothing left to split: the leaf's why is the search's
                unclosed = [batch[j] for j in np.flatnonzero(~refuted)]
                return stopped_with(job, stack + unclosed, slope_rows, decision.why), bounding
        split.append(i)
    branches = filtered_smart(job, slope_rows, bounds, signs, domains, solution, values, open_rows, costs, split)
    for i, (k, j) in zip(split, branches):
        layers, warm = layer_bounds(bounds, i), domains.warm(solution, open_rows, i)
        limit = min(2 * limits[i], settings.leaves.timeout) if i in limits else batch[i].leaf_limit
        stack.append(Node(batch[i].decisions + [(k, j, False)], layers, values[i], warm, limit))
        stack.append(Node(batch[i].decisions + [(k, j, True)], layers, values[i], warm, limit))
    return SPLIT, bounding


def leaf_limit(job: Job, node: Node, unstable: int) -> float:
    """Seconds for a domain's Z3 leaf: short at first (settings.leaves.first_timeout), twice its
    parent's once Z3 has left its parent open, since splitting is what decides most of them: with
    the full 20 s at once, two leaves of the bundled digits_mlp (image 21, eps 0.05) used 9 s of a
    10 s budget and left the case UNKNOWN, where splitting proves it in 0.4 s. A domain with
    nothing left to split gets the full limit at once."""
    if unstable == 0:
        return job.settings.leaves.timeout
    return job.settings.leaves.first_timeout if node.leaf_limit is None else node.leaf_limit


def try_domain_corners(job: Job, domains: DomainRows, solution: SlopeSolution, margins: np.ndarray, descend: bool):
    """The box corner minimising each open domain's worst row, and (if `descend`) local descent
    from those of the Settings.relu_split.corner_descents worst domains."""
    open_domains = margins <= 0
    if not np.any(open_domains):
        return None
    corners = domains.worst_corners(solution, np.flatnonzero(open_domains))
    counterexample = falsify.confirm_unsafe(job, list(corners))
    if counterexample is None and descend:
        start = time.perf_counter()
        order = np.argsort(margins[open_domains], kind="stable")[:job.settings.relu_split.corner_descents]
        counterexample = falsify.descend(job, corners[order])
        job.stats.descent_seconds += time.perf_counter() - start
    return counterexample


def stopped_with(job: Job, stack: list[Node], slope_rows: SlopeRows, why: Why) -> Decision:
    """Splitting ends undecided: what it left open goes into the statistics (how many domains,
    and the worst lower bound on their margins, which their parents proved)."""
    job.stats.open_domains = len(stack)
    worst = float(slope_rows.margins(np.stack([node.values for node in stack])).min()) if stack else np.inf
    if np.isfinite(worst):
        job.stats.worst_open_margin = round(worst, 6)
    return stopped(why)
