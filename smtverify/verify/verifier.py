"""Complete decisions of "input region AND unsafe output condition" (VNN-LIB semantics).

Order of work per case, cheapest first (METHOD 4-5): sound bounds on the whole box by
back-substitution (a fraction of a second: an easy case ends here) -> falsification (random
points, PGD) -> the root's bounds with optimised slopes -> branch and bound (input splitting where
the input is low-dimensional, ReLU splitting otherwise), with the LP and Z3 deciding the leaves
that bounds leave open. A high-dimensional case of a chain with no kink to split (Sigmoid, Tanh)
has its optimised root deepened instead, round after round. Every candidate counterexample is
confirmed by the independent executor before it is reported.
"""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from ..chain import Chain, to_chain
from ..network import Network
from ..runtime import one_blas_thread
from ..verdict import SAFE_GUARANTEE, UNSAFE_GUARANTEE, Result, Verdict
from ..vnnlib import Property
from . import falsify, input_split, leaves, lp_split, relu_split
from .context import Job, Tools
from .objective import UnsafeRows, order_only
from .outcome import OUT_OF_TIME, PROVEN, Decision, Statistics, Why, found, stopped
from .root import bound_root, deepened_root, plain_root
from .progress import Listener, ProgressReporter
from .settings import Settings

SOFTMAX_REASON = ("the network ends in Softmax and the property is not a comparison of two outputs; only such "
                  "comparisons are decided on the logits")


class Verifier:
    """Decides VNN-LIB properties of one network."""

    def __init__(self, network: Network, settings: Settings | None = None) -> None:
        self.network = network
        self.settings = settings or Settings()
        self.chain: Chain = to_chain(network)
        self.tools = Tools.build(network, self.chain, self.settings)

    def verify(self, prop: Property, timeout: float | None = None, progress: Listener | None = None) -> Result:
        """The property's verdict: SAFE only when every case is proven, UNSAFE with the first
        confirmed counterexample, else TIMEOUT or UNKNOWN with what was proven. `timeout`, if
        given, replaces the settings' for this call alone; `progress`, if given, is called with
        a Snapshot now and then (at most every quarter second, and at every change of phase)."""
        settings = self.settings if timeout is None else self.settings.with_timeout(timeout)
        reporter = ProgressReporter(progress, settings.timeout, len(prop.cases)) if progress else None
        with one_blas_thread():
            return self._verify(prop, settings, reporter)

    def _verify(self, prop: Property, settings: Settings, reporter: ProgressReporter | None) -> Result:
        start = time.perf_counter()
        deadline = start + settings.timeout
        stats = Statistics()
        if self.chain.final_softmax and not all(order_only(c) for case in prop.cases for c in case.unsafe):
            return Result(Verdict.UNKNOWN, "none", seconds=time.perf_counter() - start, reason=SOFTMAX_REASON)
        decision, reason = PROVEN, ""
        for number, case in enumerate(prop.cases, 1):
            if reporter is not None:
                reporter.case = number
            decision = self.decide(Job(self.tools, case, settings, stats, reporter), deadline)
            if decision.found:                    # confirmed against its case alone: case 0 of one
                decision = found(replace(decision.counterexample, case=number - 1))
            if not decision.proven:
                reason = _open_reason(decision, stats, number, len(prop.cases))
                break
        if reporter is not None:
            reporter.finish(stats)
        verdict = decision.verdict
        guarantee = {Verdict.SAFE: SAFE_GUARANTEE, Verdict.UNSAFE: UNSAFE_GUARANTEE}.get(verdict, "none")
        margin = float(stats.min_margin) if verdict is Verdict.SAFE and np.isfinite(stats.min_margin) else None
        return Result(verdict, guarantee, decision.counterexample, time.perf_counter() - start, margin,
                      stats.as_dict(), reason)

    def decide(self, job: Job, deadline: float) -> Decision:
        """One case: the root's plain bounds, falsification, the root's optimised bounds, then the
        splitting that suits the box."""
        case, stats, settings = job.case, job.stats, job.settings
        stats.proven_share = None
        if not case.unsafe or any(len(c.b) == 0 for c in case.unsafe):
            return _decide_trivial(job)
        rows = UnsafeRows.of(case)
        free = int(np.sum(case.box.upper > case.box.lower))
        job.report("root bounds")
        root, margin = plain_root(job, rows, deadline)
        if margin <= 0:
            job.report("falsification")
            counterexample = falsify.first_pass(job, deadline)
            if counterexample is not None:
                return found(counterexample)
            job.report("root bounds")
            root, margin = bound_root(job, rows, root, margin, deadline)
        if margin <= 0 and not self.chain.splittable and free > settings.input_split.max_dims:
            root, margin = deepened_root(job, rows, root, margin, deadline)     # nothing to split
        if margin > 0:
            stats.leaves += 1
            stats.min_margin = min(stats.min_margin, margin)
            return PROVEN
        if time.perf_counter() > deadline:        # the root's bounds were cut short: nothing proven
            return OUT_OF_TIME
        if 0 < free <= settings.input_split.max_dims:      # a single point: nothing to split but ReLUs
            return input_split.split_with_lp(job, rows, root, deadline)
        if not self.chain.splittable:        # no kink to split (Sigmoid, Tanh): Z3 on the whole box is left
            stats.worst_open_margin = round(float(margin), 6)
            return leaves.z3_leaf(job, root, 0, case.box.lower, case.box.upper, deadline)
        if self.tools.slope_optimiser is not None and settings.relu_split.batched:
            return relu_split.split_refined(job, root, deadline)
        return lp_split.split(job, rows, root, deadline)


def _decide_trivial(job: Job) -> Decision:
    """A case without constraints is never unsafe; one with a constraint without rows is unsafe
    everywhere in its box (VNN-LIB without output assertions): a float32 point of the box
    confirms it, or there is none (UNKNOWN). Bounding and splitting have no rows to work on."""
    if not job.case.unsafe:
        return PROVEN
    box = job.case.box
    counterexample = falsify.confirm_any(job, ((box.lower + box.upper) / 2)[None])
    return found(counterexample) if counterexample is not None else stopped(Why.UNDECIDED)


def _open_reason(decision: Decision, stats: Statistics, number: int, cases: int) -> str:
    """What was proven of an open case when its search stopped."""
    if decision.found:
        return ""
    if stats.proven_share is not None:
        return (f"input splitting had proven {stats.proven_share:.1%} of the input box of case "
                f"{number} of {cases} safe when it stopped")
    if stats.open_domains is not None:
        return (f"ReLU splitting had closed {stats.leaves} domains of case {number} of "
                f"{cases} and left {stats.open_domains} open when it stopped")
    if decision.why is Why.UNDECIDED:
        margin = "" if stats.worst_open_margin is None else f" (the bounds' margin: {stats.worst_open_margin:g})"
        return (f"case {number} of {cases}: nothing was left to split and Z3 could not decide what was left "
                f"within its limit per leaf{margin}")
    return ""
