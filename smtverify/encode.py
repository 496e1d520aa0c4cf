"""Z3 encodings of a chain of steps, solving them, and exporting them as SMT-LIB2.

The formula is built apart from any solver (terms and a constraint list), so one encoding can be
handed to a solver, asked under several leaves, or printed. Weights enter as the exact rationals of
the stored float values, so UNSAT is a proof about the network as stored (in exact arithmetic).
Every float bound used in a constraint is rounded outward to a rational, so it never cuts off a real
point; a ReLU whose sound input bounds do not straddle 0 is encoded linearly (no case split).
Sigmoid and Tanh are not expressible in linear real arithmetic: they are enclosed by sound linear
bounds and the encoding is marked inexact (UNSAT is still a proof, a SAT model only a candidate).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
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


def step_bounds(chain: Chain, box: Box, lp_seconds: float = 0.0) -> list[Bounds]:
    """Sound bounds of every step's input over an exact box (widened by an ulp to floats), by
    back-substitution, then tightened by LP for up to `lp_seconds` where lp.supports the chain.
    Tighter bounds fix more ReLUs and tighten the triangle cuts, which is what lets Z3 decide
    whole ACAS Xu instances from file."""
    from . import lp
    from .bounds import BoundPropagator

    lower = np.array([float(np.nextafter(float(v), -np.inf)) for v in box[0]])
    upper = np.array([float(np.nextafter(float(v), np.inf)) for v in box[1]])
    propagator = BoundPropagator(chain)
    bounds = propagator.forward(lower[None], upper[None])
    if lp_seconds > 0 and lp.supports(chain):
        relaxation = lp.LpRelaxation(chain, lower, upper)
        for bounds, _ in lp.tightened(relaxation, propagator, bounds, time.perf_counter() + lp_seconds):
            pass
    return [(lo[0], hi[0]) for lo, hi in zip(bounds.lower, bounds.upper)]


# ----- solving ------------------------------------------------------------------------------------
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


def one_shot(encoding: Encoding, condition: z3.BoolRef) -> Decider:
    """A Decider of the encoding and the condition."""
    return Decider(encoding, condition)


def decide(encoding: Encoding, condition: z3.BoolRef, timeout_s: float) -> tuple[str, np.ndarray | str | None]:
    """Is some x in the box with chain(x) meeting the condition? A 'sat' model of an inexact
    encoding (Sigmoid/Tanh) is only a candidate; every model needs the concrete check anyway."""
    return one_shot(encoding, condition).check(timeout_s)


# ----- SMT-LIB2 -----------------------------------------------------------------------------------
def to_smtlib2(encoding: Encoding, condition: z3.BoolRef, comment: str = "") -> str:
    """A self-contained QF_LRA query, printed by Z3 itself: sat means a counterexample exists
    (for an inexact encoding, only unsat is conclusive). Each neuron's affine term is printed once,
    as a define-fun Z{k}_{i}: printed whole, terms shared by several assertions would be repeated
    in each (ACAS Xu: 2-27 MB instead of about 0.5 MB). A reader expands the definitions, so a
    solver sees the very terms solved in memory."""
    pairs = _term_names(encoding)
    assertions = [z3.substitute(a, *pairs) if pairs else a for a in list(encoding.constraints) + [condition]]
    *rest, last = [a.as_ast() for a in assertions]
    array = (z3.Ast * len(rest))(*rest)
    header = comment.splitlines()
    if not encoding.exact:
        header.append("over-approximation (Sigmoid/Tanh bounded linearly): only unsat is conclusive")
    text = z3.Z3_benchmark_to_smtlib_string(z3.main_ctx().ref(), "generated by smtverify.encode",
                                            "QF_LRA", "unknown", "", len(rest), array, last)
    defined = {str(name) for _, name in pairs}
    lines = [line for line in text.splitlines(keepends=True)
             if not (line.startswith("(declare-fun ") and line.split()[1] in defined)]
    first_assert = next(i for i, line in enumerate(lines) if line.startswith("(assert"))
    definitions = [f"(define-fun {name} () Real {z3.substitute(term, *pairs[:i]).sexpr() if i else term.sexpr()})\n"
                   for i, (term, name) in enumerate(pairs)]
    return "".join(f"; {line}\n" for line in header) + "".join(lines[:first_assert] + definitions + lines[first_assert:])


def _term_names(encoding: Encoding) -> list[tuple[z3.ArithRef, z3.ArithRef]]:
    """(term, name) for every compound neuron term (not variables or numerals), in layer order,
    so each definition only uses earlier ones."""
    names: dict[int, tuple[z3.ArithRef, z3.ArithRef]] = {}
    for k, terms in enumerate(encoding.values[1:-1], start=1):
        for i, term in enumerate(terms):
            if not z3.is_const(term) and term.get_id() not in names:
                names[term.get_id()] = (term, z3.Real(f"Z{k}_{i}"))
    return list(names.values())


def write_smtlib2(network_path: str | Path, vnnlib_path: str | Path, out_path: str | Path,
                  lp_seconds: float = 30.0) -> Encoding:
    """Export "network violates property" as SMT-LIB2; a disjunction of input boxes becomes a
    disjunction of cases over the encoding of their hull. Neuron bounds (ReLUs fixed, triangle
    cuts) are tightened by LP for up to `lp_seconds`."""
    from .onnx_import import load_onnx
    from .chain import to_chain
    from .vnnlib import read_vnnlib

    chain = to_chain(load_onnx(network_path))
    prop = read_vnnlib(vnnlib_path, chain.n_inputs, chain.n_outputs)
    box = hull(prop.cases)
    encoding = encode_chain(chain, box, step_bounds(chain, box, lp_seconds))
    comment = (f"network: {Path(network_path).name}\nproperty: {Path(vnnlib_path).name}\n"
               "sat means a counterexample exists (an input in the box meeting the unsafe condition)")
    Path(out_path).write_text(to_smtlib2(encoding, property_condition(encoding, prop.cases), comment))
    return encoding
