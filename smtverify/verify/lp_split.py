"""ReLU splitting one node at a time with LP bounds: the second complete method.

A node is bounded first by the LP over the relaxation with its parent's neuron bounds and its own
phase decisions (cheap: warm-started), then, if still open, by back-substitution recomputed under
its decisions, and the LP again on those tighter bounds. It is split on the neuron whose
relaxation costs the LP bound most; Z3 decides nodes with few unstable neurons left. It runs
where the slope optimiser does not support the chain, and on request, to check the batched
method against.
"""
from __future__ import annotations

import time


from .. import lp
from ..bounds import ChainBounds
from ..lp import LpRelaxation
from . import leaves
from .context import Job
from .domains import Node
from .neuron_bounds import as_fixed, layer_bounds, unstable, with_decisions
from .objective import UnsafeRows
from .outcome import OUT_OF_TIME, PROVEN, SPLIT, Decision, Why, stopped
from .relu_branching import by_lp_scores


def split(job: Job, rows: UnsafeRows, root: ChainBounds, deadline: float) -> Decision:
    """Depth-first branch and bound on phases, a node at a time, from the root's bounds (first
    tightened by LP within a share of the time)."""
    stats, settings = job.stats, job.settings
    relaxation = LpRelaxation(job.chain, job.case.box.lower, job.case.box.upper) if lp.supports(job.chain) else None
    stats.splitting, stats.lp = "relu_per_node", relaxation is not None
    if relaxation is not None:
        job.report("LP tightening")
        start = time.perf_counter()
        root, decision = leaves.tighten(job, relaxation, root, start + settings.bounds.lp_tighten_share * (deadline - start))
        if decision.found:
            return decision
    stack: list[Node] = [Node([], layer_bounds(root, 0))]
    # none begins that would end past the deadline, at the last node's seconds (the root's first)
    last_node = stats.root_seconds
    while stack:
        if time.perf_counter() + last_node > deadline:
            return OUT_OF_TIME
        if stats.leaves > settings.leaves.max_leaves:
            return stopped(Why.LEAF_LIMIT)
        job.report("ReLU splitting (LP)", open=len(stack))
        node, began = stack.pop(), time.perf_counter()
        decision, bounds, branch = bound_node(job, rows, node, relaxation, deadline)
        last_node = time.perf_counter() - began
        if decision.proven:
            continue
        if decision.why is not Why.SPLIT:     # a counterexample, or nothing left to split and Z3 undecided
            return decision
        k, j = branch
        layers = layer_bounds(bounds, 0)
        stack.append(Node(node.decisions + [(k, j, False)], layers))
        stack.append(Node(node.decisions + [(k, j, True)], layers))
    return PROVEN


def bound_node(job: Job, rows: UnsafeRows, node: Node, relaxation: LpRelaxation | None, deadline: float
               ) -> tuple[Decision, ChainBounds | None, tuple[int, int] | None]:
    """(the node's decision, its bounds, the neuron to split when the decision is SPLIT)."""
    stats, box = job.stats, job.case.box
    if relaxation is not None:
        inherited = with_decisions(job.chain, node.layers, node.decisions, job.case)
        if inherited is None:
            stats.leaves += 1
            return PROVEN, None, None
        decision, _ = leaves.lp_node(job, relaxation, inherited, deadline)
        if not decision.open:
            return decision, None, None
    within = ([l[None] for l in node.layers[0][:-1]], [u[None] for u in node.layers[1][:-1]])
    bounds = job.tools.bounds.forward(box.lower[None], box.upper[None], as_fixed(node.decisions, job.chain), within)
    stats.boxes_bounded += 1
    if bounds.empty()[0]:
        stats.leaves += 1           # contradictory phases: an empty branch
        return PROVEN, None, None
    margin = rows.margins(job.tools.bounds.lower_bound_rows(bounds, rows.A))[0]
    if margin > 0:
        stats.leaves += 1
        stats.min_margin = min(stats.min_margin, margin)
        return PROVEN, None, None
    scores = None
    if relaxation is not None:
        decision, scores = leaves.lp_node(job, relaxation, bounds, deadline)
        if not decision.open:
            return decision, bounds, None
    candidates = unstable(job.chain, bounds)
    if len(candidates) <= job.settings.leaves.relus:
        decision = leaves.z3_leaf(job, bounds, 0, box.lower, box.upper, deadline, node.decisions)
        if not decision.open or not candidates:
            return decision, bounds, None
    return SPLIT, bounds, by_lp_scores(candidates, scores)
