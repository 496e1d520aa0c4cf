"""The exact end of branch and bound: the LP over a node's relaxation, and Z3 on its exact
encoding (smtverify.leaves), for boxes and domains that bounds leave open. Also the LP tightening
of neuron bounds, whose optima are tried as counterexamples on the way."""
from __future__ import annotations

import time

import numpy as np

from .. import lp
from ..bounds import ChainBounds
from ..lp import LpRelaxation
from . import falsify
from .context import Job
from .neuron_bounds import PhaseDecision
from .outcome import OUT_OF_TIME, PROVEN, SPLIT, Decision, Why, found, stopped


def box_leaf(job: Job, bounds: ChainBounds, index: int, lo: np.ndarray, hi: np.ndarray, deadline: float,
             relaxation: LpRelaxation | None = None) -> Decision:
    """An input-splitting box with few unstable ReLUs left (Settings.input_split.leaf_relus): the
    LP bound (if there is a relaxation) and then Z3 decide it, or it is split further."""
    if relaxation is not None:
        decision, _ = lp_node(job, relaxation, bounds.subset(slice(index, index + 1)), deadline)
        if not decision.open:
            return decision
    decision = z3_leaf(job, bounds, index, lo, hi, deadline)
    return decision if not decision.open else SPLIT


def z3_leaf(job: Job, bounds: ChainBounds, index: int, lo: np.ndarray, hi: np.ndarray, deadline: float,
            decisions: list[PhaseDecision] = (), limit: float | None = None) -> Decision:
    """Z3 decides box `index` of `bounds` within `limit` seconds (default Settings.leaves.timeout):
    proven, a confirmed counterexample, or open: out of time when the case's deadline was the limit
    that stopped Z3 or left too little to ask it; undecided when the leaf's own limit did (more time
    for the case would not change that: a 6x200 Sigmoid net's leaf needs about 36 s to set up,
    beyond 20 s)."""
    limit = job.settings.leaves.timeout if limit is None else limit
    leaf_deadline = min(deadline, time.perf_counter() + limit)
    step_bounds = [(l[index], u[index]) for l, u in zip(bounds.lower, bounds.upper)]
    outcome = job.tools.leaf_solver.solve(job.case.unsafe, lo, hi, step_bounds, decisions, leaf_deadline,
                                          lambda model: falsify.near_model(job, model, lo, hi))
    job.stats.z3_calls += outcome.calls
    if outcome.status == "unsat":
        job.stats.z3_unsat += 1
        job.stats.leaves += 1
        return PROVEN
    if outcome.counterexample is not None:
        return found(outcome.counterexample)
    if outcome.status in ("skipped", "unknown") and leaf_deadline >= deadline:
        return OUT_OF_TIME      # the case's own deadline stopped Z3, or left too little to ask it
    return stopped(Why.UNDECIDED)   # Z3 gave up, or its own limit (leaves.timeout) did not cover the leaf


def lp_node(job: Job, relaxation: LpRelaxation, bounds: ChainBounds, deadline: float
            ) -> tuple[Decision, dict[int, np.ndarray] | None]:
    """The LP bound of every unsafe constraint over the node's relaxation: proven when every
    constraint's is positive, a counterexample found at an LP optimum, or open with the worst
    constraint's branching scores."""
    relaxation.set_bounds(bounds)
    worst = None
    for constraint in job.case.unsafe:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return OUT_OF_TIME, None
        solved = relaxation.lower_bound(constraint.A, constraint.b, remaining)
        job.stats.lp_solves += 1
        if solved.value > 0:
            continue
        counterexample = falsify.confirm_unsafe(job, [solved.x] if solved.x is not None else [])
        if counterexample is not None:
            return found(counterexample), None
        if worst is None or solved.value < worst.value:
            worst = solved
    if worst is None:
        job.stats.leaves += 1
        return PROVEN, None
    return SPLIT, worst.relu_scores


def tighten(job: Job, relaxation: LpRelaxation, bounds: ChainBounds, deadline: float
            ) -> tuple[ChainBounds, Decision]:
    """Neuron bounds tightened by LP (lp.tightened); every LP optimum is also tried as a
    counterexample. (the bounds, SPLIT or a counterexample)."""
    for bounds, points in lp.tightened(relaxation, job.tools.bounds, bounds, deadline):
        job.stats.lp_solves += len(points)
        job.stats.boxes_bounded += 1
        counterexample = falsify.confirm_unsafe(job, points)
        if counterexample is not None:
            return bounds, found(counterexample)
    return bounds, SPLIT
