"""Falsification: looking for a counterexample, and confirming every candidate before it counts.

Cheapest first (METHOD 5): random points and PGD before any bound; later, deeper searches where
splitting points to a likely region. A candidate counts only once onnxruntime confirms it
(confirm.py); the ones it rejects are counted, never reported.
"""
from __future__ import annotations

import time

import numpy as np

from .. import attack, confirm
from ..confirm import Counterexample
from .context import Job
from .properties import case_within


def first_pass(job: Job, deadline: float) -> Counterexample | None:
    """Random points then PGD, within a fixed share of the time budget (of the time left, if
    less), PGD's steps none past it (their minimum, sized by a point's measured cost, took
    0.6-1.1 s on oval21's and verivital's conv nets); the first candidate onnxruntime confirms
    is the answer."""
    s, tools = job.settings.falsify, job.tools
    began = time.perf_counter()
    seconds = min(s.share * job.settings.timeout, deadline - began)
    if seconds <= 0:
        return None
    if tools.point_seconds is None:
        tools.point_seconds = attack.point_seconds(tools.chain, tools.rng)
    budget = seconds / tools.point_seconds          # point-evaluations we can afford
    points = int(np.clip(budget / 4, 64, s.random_points))
    restarts = int(np.clip(budget / (s.steps * max(len(job.case.unsafe), 1)), 2, s.restarts))
    job.stats.random_points, job.stats.pgd_restarts = points, restarts
    candidates = [attack.random_search(tools.chain, job.case, points, tools.rng)] if points else []
    candidates.append(attack.pgd(tools.chain, job.case, tools.rng, restarts=restarts, steps=s.steps,
                                 deadline=began + seconds))
    for batch in candidates:
        found = confirm_any(job, batch)
        if found is not None:
            return found
    return None


def deep(job: Job, deadline: float) -> Counterexample | None:
    """For a low-dimensional box that resisted the first rounds of splitting: many uniform
    points, and local descent from the nearest to unsafe. Sat instances whose unsafe region is
    a sliver (ACAS Xu 1_5/prop_2 and 5_3/prop_2) are found this way in seconds, where PGD's
    random restarts and the boxes closing in on the sliver did not in the whole timeout."""
    s, chain, rng = job.settings.falsify, job.chain, job.tools.rng
    points = int(np.clip(s.deep_share * job.settings.timeout / attack.forward_seconds(chain, rng), s.deep_seeds,
                         s.deep_random_points))
    job.stats.deep_random_points = points
    seeds = attack.closest(chain, job.case, points, rng, s.deep_seeds)
    return confirm_any(job, attack.descend_from(chain, job.case, seeds, deadline=deadline))


def in_boxes(job: Job, boxes: list[tuple[np.ndarray, np.ndarray]]) -> Counterexample | None:
    """PGD inside each of these boxes (input splitting's worst open ones: where a counterexample
    most likely is)."""
    for lo, hi in boxes:
        points = attack.pgd(job.chain, case_within(job.case, lo, hi), job.tools.rng, restarts=8, steps=30)
        found = confirm_any(job, points, limit=2)
        if found is not None:
            return found
    return None


def descend(job: Job, starts: np.ndarray) -> Counterexample | None:
    """Local descent from these points (the box corners that minimise open domains' bounds: what
    LP optima found on sat instances that attacks miss, MNIST-FC 256x2 prop_2 eps 0.03)."""
    return confirm_any(job, attack.descend_from(job.chain, job.case, starts, steps=30), limit=2)


def near_model(job: Job, model: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> Counterexample | None:
    """A Z3 model confirmed, or a point near it: a model lies on the boundary of the unsafe
    region as often as not (the unsafe rows tight), where rounding to float32 can leave it.
    Descent from it goes into the region where the region goes on past it (a MaxPool net's,
    3% of its box wide, which PGD's random starts missed: the verdict was UNKNOWN); where the
    model only touches the region, the leaf solver asks Z3 again for a point inside."""
    found = confirm_any(job, model[None])
    if found is not None:
        return found
    within = case_within(job.case, lo, hi)
    found = confirm_any(job, attack.descend_from(job.chain, within, model[None]), limit=2)
    if found is not None:
        return found
    return confirm_any(job, attack.pgd(job.chain, within, job.tools.rng, restarts=8, steps=30))


def confirm_unsafe(job: Job, points: list[np.ndarray]) -> Counterexample | None:
    """The first of these points that the chain finds unsafe and onnxruntime confirms."""
    if not points:
        return None
    x = np.stack(points)
    return confirm_any(job, x[attack.is_unsafe(job.case, job.chain.forward(x))])


def confirm_any(job: Job, points: np.ndarray, limit: int = 8) -> Counterexample | None:
    """The first of (at most `limit` of) these points that onnxruntime confirms."""
    for x in points[:limit]:
        found = confirm.confirm(job.tools.network, job.case, x)
        if found is not None:
            return found
        job.stats.unconfirmed_candidates += 1
    return None
