"""Z3 deciding an encoding and a condition: sat with an input of the box as floats, unsat, or unknown."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import z3

from .encode import Encoding


def _make_solver() -> z3.Solver:
    """Z3's default solver: on the ACAS Xu queries in encodings/ neither SolverFor("QF_LRA") nor
    the tactics tried (qflra; simplify, solve-eqs, smt) was consistently faster (encodings/README.md)."""
    return z3.Solver()


class Decider:
    """One solver holding an encoding and a condition, to check once (no push/pop: a push
    preprocesses outside the timeout). Asserting takes a while on a big net, and Z3's timeout does
    not cover it: 8-15 s for a 5-input net of four 300-wide ReLU layers, 1 000 of them unstable."""

    def __init__(self, encoding: Encoding, condition: z3.BoolRef) -> None:
        self.encoding = encoding
        self.solver = _make_solver()
        self.solver.add(encoding.constraints + [condition])

    def check(self, timeout_s: float) -> tuple[str, np.ndarray | str | None]:
        """What is asserted: ('sat', x as float64) | ('unsat', None) | ('unknown', reason)."""
        self.solver.set("timeout", max(1, int(timeout_s * 1000)))
        answer = self.solver.check()
        if answer == z3.sat:
            return "sat", self._input(self.solver.model())
        if answer == z3.unsat:
            return "unsat", None
        return "unknown", self.solver.reason_unknown()

    def _input(self, model: z3.ModelRef) -> np.ndarray:
        lower, upper = self.encoding.box
        values = [model.eval(x, model_completion=True) for x in self.encoding.inputs]
        return np.array([_float_inside(Fraction(v.numerator_as_long(), v.denominator_as_long()), lo, hi)
                         for v, lo, hi in zip(values, lower, upper)])


def _float_inside(value: Fraction, lower: Fraction, upper: Fraction) -> float:
    """The float nearest a rational in [lower, upper], moved one ulp back inside if rounding left it."""
    x = float(value)
    if Fraction(x) < lower:
        x = float(np.nextafter(x, np.inf))
    elif Fraction(x) > upper:
        x = float(np.nextafter(x, -np.inf))
    return x


def decide(encoding: Encoding, condition: z3.BoolRef, timeout_s: float) -> tuple[str, np.ndarray | str | None]:
    """Is some x in the box with chain(x) meeting the condition? A 'sat' model of an inexact
    encoding (Sigmoid/Tanh) is only a candidate; every model needs the concrete check anyway."""
    return Decider(encoding, condition).check(timeout_s)
