"""Z3 formulas: a chain of steps over a box (each step encodes itself, Step.encode_z3) and the
conditions asked of it (unsafe outputs, phase decisions, sub-boxes).

The formula is built apart from any solver (terms and a constraint list), so one encoding can be
handed to a solver (z3_solver.py), asked under several leaves, or printed (smtlib.py). Weights
enter as the exact rationals of the stored float values, so UNSAT is a proof about the network as
stored (in exact arithmetic). Every float bound used in a constraint is rounded outward to a
rational, so it never cuts off a real point; a kink (ReLU, LeakyRelu) whose sound input bounds do
not straddle 0 is encoded linearly (no case split).
Sigmoid and Tanh are not expressible in linear real arithmetic: they are enclosed by sound linear
bounds and the encoding is marked inexact (UNSAT is still a proof, a SAT model only a candidate).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np
import z3

from .chain import Chain
from .steps import Bounds
from .z3terms import linear, rational

Box = tuple[Sequence[Fraction], Sequence[Fraction]]


@dataclass
class Encoding:
    """y = chain(x) for x in a box, as Z3 terms: values[0] are the inputs X_i, values[k + 1] the
    outputs of step k, values[-1] the outputs Y_j. Affine outputs are terms over earlier values,
    not variables: Z3 decided ACAS Xu 2_4/prop 3 in 5.4 s so, and not in 30 s with a variable and an
    equality per neuron (encodings/README.md). Only nonlinear outputs get variables."""

    values: list[list[z3.ArithRef]]
    constraints: list[z3.BoolRef]
    exact: bool                    # False when Sigmoid/Tanh are over-approximated
    box: tuple[tuple[Fraction, ...], tuple[Fraction, ...]]

    @property
    def inputs(self) -> list[z3.ArithRef]:
        return self.values[0]

    @property
    def outputs(self) -> list[z3.ArithRef]:
        return self.values[-1]


# ----- the chain ----------------------------------------------------------------------------------
def encode_chain(chain: Chain, input_box_exact: Box, step_bounds: Sequence[Bounds] | None = None) -> Encoding:
    """Constraints for y = chain(x), x in the box. `step_bounds[k]` bounds the input of step k
    (sound, e.g. from bounds.BoundPropagator; extra entries are ignored). Without it every ReLU is
    case-split without cuts, and steps with a rounding allowance (rel_error > 0) cannot be encoded."""
    return ChainEncoder(chain).encode(input_box_exact, step_bounds)


class ChainEncoder:
    """Encodes one chain over many boxes and bounds (the leaves of a branch and bound); each step
    encodes itself (Step.encode_z3), keeping what does not depend on the bounds (an affine step's
    numerals and terms) in its memo here."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self._memos: dict[int, dict] = {k: {} for k in range(len(chain.steps))}

    def encode(self, input_box_exact: Box, step_bounds: Sequence[Bounds] | None = None) -> Encoding:
        """The Encoding of the chain over this box, with these step bounds (see encode_chain)."""
        lower, upper = (tuple(Fraction(v) for v in side) for side in input_box_exact)
        xs = [z3.Real(f"X_{i}") for i in range(self.chain.n_inputs)]
        constraints = [c for x, lo, hi in zip(xs, lower, upper) for c in (x >= rational(lo), x <= rational(hi))]
        values = [xs]
        for k, step in enumerate(self.chain.steps):
            bounds = step_bounds[k] if step_bounds is not None else None
            out, more = step.encode_z3(k, values[-1], bounds, self._memos[k])
            values.append(out)
            constraints += more
        ys = [z3.Real(f"Y_{j}") for j in range(len(values[-1]))]
        constraints += [y == v for y, v in zip(ys, values[-1])]
        values[-1] = ys
        exact = all(step.exact_encoding for step in self.chain.steps)
        return Encoding(values, constraints, exact, (lower, upper))


# ----- properties ---------------------------------------------------------------------------------
def unsafe_condition(encoding: Encoding, constraints: Sequence) -> z3.BoolRef:
    """Some OutputConstraint holds: an Or over constraints of the And of their rows A y <= b
    ('<' on strict rows). No constraint at all: nothing is unsafe (vnnlib.Case: unsafe iff any of
    its constraints holds; a constraint without rows holds everywhere)."""
    if not constraints:
        return z3.BoolVal(False)
    return z3.Or([z3.And([_row(encoding.outputs, a, c.rhs_exact(i), s) for i, (a, s) in enumerate(zip(c.A, c.strict))])
                  for c in constraints])


def _row(ys: list, a: np.ndarray, b: Fraction, strict: bool) -> z3.BoolRef:
    """One output row as written (its right-hand side exact, not rounded to a float)."""
    columns = np.flatnonzero(a)
    lhs = linear(a[columns], columns, ys)
    return lhs < rational(b) if strict else lhs <= rational(b)


def phase_condition(encoding: Encoding, decisions: Sequence[tuple[int, int, bool]]) -> z3.BoolRef:
    """Kink phase decisions (step k, neuron j, active): the input of step k at j is >= 0 (active)
    or <= 0. Bounds that encode a decision make the kink look stable, so the encoding passes it on
    without its phase; this restores the phase as a constraint on the inputs."""
    return z3.And([encoding.values[k][j] >= 0 if active else encoding.values[k][j] <= 0
                   for k, j, active in decisions])


def box_condition(encoding: Encoding, lower: Sequence[Fraction], upper: Sequence[Fraction]) -> z3.BoolRef:
    """x inside a sub-box of the encoding's box (one case of a disjunctive property)."""
    return z3.And([c for x, lo, hi in zip(encoding.inputs, lower, upper)
                   for c in (x >= rational(lo), x <= rational(hi))])


def property_condition(encoding: Encoding, cases: Sequence) -> z3.BoolRef:
    """Some case is violated: its box (when the encoding's box is a hull of several) and its unsafe
    condition. The encoding's box must contain every case's box."""
    if len(cases) == 1:
        return unsafe_condition(encoding, cases[0].unsafe)
    return z3.Or([z3.And(box_condition(encoding, c.box.lower_exact, c.box.upper_exact),
                         unsafe_condition(encoding, c.unsafe)) for c in cases])


def hull(cases: Sequence) -> tuple[tuple[Fraction, ...], tuple[Fraction, ...]]:
    """The smallest box holding every case's box, exactly."""
    lower = tuple(min(vs) for vs in zip(*(c.box.lower_exact for c in cases)))
    upper = tuple(max(vs) for vs in zip(*(c.box.upper_exact for c in cases)))
    return lower, upper
