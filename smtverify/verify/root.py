"""Sound bounds on a case's whole input box: the root of either kind of splitting."""
from __future__ import annotations

import time

import numpy as np

from ..bounds import ChainBounds
from .context import Job
from .objective import SlopeRows, UnsafeRows


def plain_root(job: Job, rows: UnsafeRows, deadline: float) -> tuple[ChainBounds, float]:
    """The box's bounds and margin by back-substitution alone: a fraction of a second, so it comes
    before falsification, which cannot succeed where it proves the case (an easy instance is then
    answered in the time of one bound pass)."""
    tools, box = job.tools, job.case.box
    began = time.perf_counter()
    root = tools.bounds.forward(box.lower[None], box.upper[None], deadline=deadline)
    margin = rows.margins(tools.bounds.lower_bound_rows(root, rows.A))[0]
    job.stats.boxes_bounded += 1
    job.stats.root_seconds = time.perf_counter() - began
    return root, margin


def bound_root(job: Job, rows: UnsafeRows, root: ChainBounds, margin: float,
               deadline: float) -> tuple[ChainBounds, float]:
    """The plain root's bounds and margin, again with optimised slopes where they leave the case
    open and time allows. Records how long the root took in all (refining plans by it)."""
    tools = job.tools
    began = time.perf_counter()
    late = began + job.stats.root_seconds > deadline      # for a forward as long again
    if margin <= 0 and tools.slope_optimiser is not None and job.settings.bounds.root_slope_steps > 0 and not late:
        root, margin = optimised_root(job, rows, root, deadline)
    job.stats.root_seconds += time.perf_counter() - began
    return root, margin


def deepened_root(job: Job, rows: UnsafeRows, root: ChainBounds, margin: float,
                  deadline: float) -> tuple[ChainBounds, float]:
    """For a chain with nothing to split (Sigmoid, Tanh, no kink): the optimised root again, within
    the last one's bounds, with twice the ascent's steps each round, while the next round (about
    twice the last) fits in the time: each round's tighter hidden bounds tighten the next one's
    relaxations (ERAN's 6x200 Sigmoid net: 4 of the 16 instances its plain root leaves open proven
    by one round of 20 steps). It stops once a round gains less than half the gap left: later
    rounds gain less, so the case is given up (UNKNOWN) instead of spending its whole budget
    (9044 eps 0.012: -17.5 -> -16.4)."""
    steps, last, gain = job.settings.bounds.root_slope_steps, 0.0, np.inf
    while (job.tools.slope_optimiser is not None and margin <= 0 < steps and 2 * gain >= -margin
           and time.perf_counter() + 2.5 * last <= deadline):
        steps *= 2
        began = time.perf_counter()
        root, found = optimised_root(job, rows, root, deadline, steps)
        gain, margin, last = found - margin, max(margin, found), time.perf_counter() - began
        job.stats.boxes_bounded += 1
    return root, margin


def optimised_root(job: Job, rows: UnsafeRows, root: ChainBounds, deadline: float,
                   steps: int | None = None) -> tuple[ChainBounds, float]:
    """The root's bounds again with every hidden neuron's slopes optimised (`steps` steps, default
    the settings'), and its margin with the output rows' too: a few seconds once, where
    LP-tightening every neuron took minutes (MNIST-FC 256x4, prop_0 eps 0.05: margin -5.4 -> -2.2,
    unstable ReLUs 402 -> 207, 0.5 s)."""
    tools, box = job.tools, job.case.box
    steps = job.settings.bounds.root_slope_steps if steps is None else steps
    root = tools.bounds.forward(box.lower[None], box.upper[None], within=(root.lower, root.upper),
                                row_bound=tools.slope_optimiser.row_bound(steps, deadline), deadline=deadline)
    margin = max(rows.margins(tools.bounds.lower_bound_rows(root, rows.A))[0],
                 slope_margins(job, SlopeRows.of(job.case), root, deadline, steps=5 * steps)[0])
    return root, margin


def slope_margins(job: Job, slope_rows: SlopeRows, bounds: ChainBounds, deadline: float, steps: int) -> np.ndarray:
    """Each box's margin with its output rows' ReLU slopes optimised for `steps` steps."""
    values = job.tools.slope_optimiser.lower_bounds(bounds, slope_rows.objective(len(bounds.box_lower)),
                                                    len(job.chain.steps), iterations=steps,
                                                    stop=lambda v: bool(np.all(slope_rows.margins(v) > 0)),
                                                    deadline=deadline)
    return slope_rows.margins(values)
