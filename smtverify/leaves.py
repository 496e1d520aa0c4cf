"""Z3 deciding one leaf of branch and bound (a box, with its neuron bounds and ReLU phase decisions)
within a deadline.

Z3 is loaded only when a leaf first needs it, and the chain's encoder (its weights as numerals) is
built once, only if the time left allows it. A model Z3 returns meets the unsafe rows, but as often
as not with equality (a vertex of the region), where rounding the input to float32 can leave the
region: then Z3 is asked again for a model a little inside it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Sequence

import numpy as np

from .chain import Chain
from .vnnlib import OutputConstraint
from .z3_watchdog import interrupt_after

# Each unsafe row A_i y <= b_i asked again as A_i y <= b_i - d * max(1, |b_i|), for each d in turn
# until a model is confirmed or none is found: above the float32 rounding of small nets' outputs,
# the first well below most violations; the second for regions shallower than that (a BatchNorm
# net's, 1.3e-4 deep below a threshold of -2.35, ended UNKNOWN with the first alone).
DEEPER = (2.0 ** -14, 2.0 ** -20)
# A chain's first leaf, before any is measured: encoding it and asserting it took 2.6-4.7 times the
# encoding's estimate (a 5-input net of four 300-wide ReLU layers, 5.5 s estimated: 6.3-7.7 s
# encoding, then 8-18 s asserting, on a loaded machine).
FIRST_SETUP_PER_ENCODING = 5.0


def cold_encoding_seconds(chain: Chain) -> float:
    """About how long a chain's first Z3 encoding takes (its weights' numerals are built then):
    4.2 s for MNIST-FC 256x2's 269 000 weights, measured."""
    weights = sum(s.nonzeros for s in chain.steps if s.linear)
    return 2e-5 * weights


@dataclass
class LeafOutcome:
    """'unsat' (proven safe), 'sat' (with the confirmed counterexample, or None if no model was
    confirmed), 'unknown' (Z3 gave up) or 'skipped' (no time left to ask); and Z3's calls."""

    status: str
    counterexample: object = None
    calls: int = 0


class LeafSolver:
    """Z3 over the leaves of one chain. A query is begun only if the time left covers what it costs
    before Z3's timeout applies (encoding the leaf and asserting it): estimated from the weights for
    the first, then as long as the last one took. A 20 s run overran by 7 s when the first leaf was
    begun with the encoding's estimate alone, its assertion uncounted."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self._encoder = None
        self.setup_seconds = FIRST_SETUP_PER_ENCODING * cold_encoding_seconds(chain)

    def solve(self, constraints: Sequence[OutputConstraint], lo: np.ndarray, hi: np.ndarray,
              step_bounds: list[tuple[np.ndarray, np.ndarray]], decisions: Sequence[tuple[int, int, bool]],
              deadline: float, confirm: Callable[[np.ndarray], object]) -> LeafOutcome:
        """Is some x in [lo, hi], within the step bounds and phase decisions, unsafe? `confirm`
        turns a model into a confirmed counterexample or None."""
        from . import encode

        began = time.perf_counter()
        if deadline - began <= self.setup_seconds + 0.05:
            return LeafOutcome("skipped")
        if self._encoder is None:
            self._encoder = encode.ChainEncoder(self.chain)
        box = (tuple(Fraction(float(v)) for v in lo), tuple(Fraction(float(v)) for v in hi))
        encoding = self._encoder.encode(box, step_bounds)
        status, model = self._decide(encoding, constraints, decisions, deadline, began)
        outcome = LeafOutcome(status, calls=int(status != "skipped"))
        if status == "sat":
            outcome.counterexample = confirm(model)
        for depth in DEEPER:            # the model was on the region's boundary: ask for one inside it
            again = time.perf_counter()
            if outcome.status != "sat" or outcome.counterexample is not None or deadline - again <= self.setup_seconds + 0.05:
                break
            status, model = self._decide(encoding, _deeper(constraints, depth), decisions, deadline, again)
            outcome.calls += status != "skipped"
            if status == "sat":
                outcome.counterexample = confirm(model)
            elif status != "unsat":      # Z3 gave up or no time was left (unsat: a shallower one may be)
                break
        return outcome

    def _decide(self, encoding, constraints: Sequence[OutputConstraint], decisions: Sequence[tuple[int, int, bool]],
                deadline: float, began: float) -> tuple[str, np.ndarray | str | None]:
        """Z3 on the encoding and the unsafe condition, by the deadline ('skipped' if no time is
        left once it is asserted); the setup, from `began`, measured. A watchdog interrupts Z3 if
        it overruns its own timeout (it does not always poll it in arithmetic)."""
        import z3

        from . import encode
        from .z3_solver import Decider

        condition = z3.And(encode.unsafe_condition(encoding, constraints), encode.phase_condition(encoding, decisions))
        decider = Decider(encoding, condition)
        self.setup_seconds = time.perf_counter() - began
        remaining = deadline - time.perf_counter()
        if remaining <= 0.05:
            return "skipped", None
        with interrupt_after(remaining):
            return decider.check(remaining)


def _deeper(constraints: Sequence[OutputConstraint], depth: float) -> list[OutputConstraint]:
    """The constraints with every right-hand side lowered by `depth` (relative, at least absolute)."""
    deeper = []
    for c in constraints:
        exact = [c.rhs_exact(i) - Fraction(depth) * max(1, abs(c.rhs_exact(i))) for i in range(len(c.b))]
        deeper.append(OutputConstraint(c.A, np.array([float(v) for v in exact]), c.strict, tuple(exact)))
    return deeper
