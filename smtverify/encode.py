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

import functools
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np
import z3
from scipy import sparse

from .pwl import Activation, Affine, Chain, MaxPool, Step

Bounds = tuple[np.ndarray, np.ndarray]             # (lower, upper) float64 arrays of one step's input
Box = tuple[Sequence[Fraction], Sequence[Fraction]]
# Sigmoid/Tanh values come from numpy's tanh (a few ulps off): bounds are widened by this much, and
# slopes (tangents) by this much per unit of distance. Both dwarf float64 rounding of values in [-1, 1].
SMOOTH_SLACK = 2.0 ** -40
SMOOTH_RANGE = {"Sigmoid": (0, 1), "Tanh": (-1, 1)}
SMOOTH_SLOPE = {"Sigmoid": lambda f: f * (1 - f), "Tanh": lambda f: 1 - f * f}


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

    def phase(self, step: int, neuron: int, active: bool) -> z3.BoolRef:
        """The literal fixing one ReLU's phase (its input >= 0 or <= 0), for leaves."""
        z = self.values[step][neuron]
        return z >= 0 if active else z <= 0


# ----- rationals ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1 << 16)
def _rational(value: float | Fraction) -> z3.RatNumRef:
    """A float (exactly: every float64 is a dyadic rational) or a Fraction as a Z3 numeral."""
    return z3.RealVal(Fraction(value))


def _down(value: float) -> Fraction:
    return Fraction(float(np.nextafter(value, -np.inf)))


def _up(value: float) -> Fraction:
    return Fraction(float(np.nextafter(value, np.inf)))


def _linear(coefficients: np.ndarray, columns: np.ndarray, variables: list[z3.ArithRef],
            constant: float | Fraction = 0) -> z3.ArithRef:
    """sum_k coefficients[k] * variables[columns[k]] + constant, exactly."""
    return _sum_of_products([_rational(float(c)) for c in coefficients], columns, variables, constant)


def _sum_of_products(numerals: Sequence[z3.RatNumRef], columns: np.ndarray, variables: list[z3.ArithRef],
                     constant: float | Fraction = 0) -> z3.ArithRef:
    """sum_k numerals[k] * variables[columns[k]] + constant. Built with Z3's C API (each product
    wrapped at once, so Z3 counts its reference): z3.Sum and `*` check and coerce every argument in
    Python, several times slower, and building terms dominated the time of Z3 leaves on ACAS Xu
    (measured)."""
    ctx = z3.main_ctx()
    pair = (z3.Ast * 2)()
    terms = []
    for c, j in zip(numerals, columns):
        pair[0], pair[1] = c.as_ast(), variables[j].as_ast()
        terms.append(z3.ArithRef(z3.Z3_mk_mul(ctx.ref(), 2, pair), ctx))
    if constant or not terms:
        terms.append(_rational(constant))
    if len(terms) == 1:
        return terms[0]
    array = (z3.Ast * len(terms))(*(t.as_ast() for t in terms))
    return z3.ArithRef(z3.Z3_mk_add(ctx.ref(), len(terms), array), ctx)


# ----- the chain ----------------------------------------------------------------------------------
Terms = list[z3.ArithRef]


def encode_chain(chain: Chain, input_box_exact: Box, step_bounds: Sequence[Bounds] | None = None) -> Encoding:
    """Constraints for y = chain(x), x in the box. `step_bounds[k]` bounds the input of step k
    (sound, e.g. from bounds.BoundPropagator; extra entries are ignored). Without it every ReLU is
    case-split without cuts, and steps with a rounding allowance (rel_error > 0) cannot be encoded."""
    return ChainEncoder(chain).encode(input_box_exact, step_bounds)


class ChainEncoder:
    """Encodes one chain over many boxes and bounds (the leaves of a branch and bound). The weights'
    numerals and the affine terms over unchanged inputs are built once: a first layer's terms do not
    depend on the bounds, and building them again took 4.6 of the 4.7 s of every Z3 leaf on
    MNIST-FC 256x2 (784 x 256 weights, more distinct numerals than _rational's cache holds)."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self._weights: dict[int, tuple[sparse.csr_matrix, list[z3.RatNumRef]]] = {}
        self._terms: dict[int, tuple[tuple[int, ...], Terms]] = {}    # step -> (input ids, its terms)

    def encode(self, input_box_exact: Box, step_bounds: Sequence[Bounds] | None = None) -> Encoding:
        """The Encoding of the chain over this box, with these step bounds (see encode_chain)."""
        lower, upper = (tuple(Fraction(v) for v in side) for side in input_box_exact)
        xs = [z3.Real(f"X_{i}") for i in range(self.chain.n_inputs)]
        constraints = [c for x, lo, hi in zip(xs, lower, upper) for c in (x >= _rational(lo), x <= _rational(hi))]
        values = [xs]
        for k, step in enumerate(self.chain.steps):
            bounds = step_bounds[k] if step_bounds is not None else None
            if isinstance(step, Affine):
                out, more = self._affine(step, k, values[-1], bounds)
            else:
                out, more = _encode_nonlinear(step, k, values[-1], bounds)
            values.append(out)
            constraints += more
        ys = [z3.Real(f"Y_{j}") for j in range(len(values[-1]))]
        constraints += [y == v for y, v in zip(ys, values[-1])]
        values[-1] = ys
        exact = not any(isinstance(s, Activation) and s.kind != "Relu" for s in self.chain.steps)
        return Encoding(values, constraints, exact, (lower, upper))

    def _affine(self, step: Affine, k: int, xs: Terms, bounds: Bounds | None) -> tuple[Terms, list[z3.BoolRef]]:
        """W x + b as terms over the nonzero weights of each row; plus a bounded error variable per row
        where forming W or b rounded (rel_error > 0): |e_i| <= rel_error * (|W_i| . max|x| + |b_i|)."""
        if k not in self._weights:
            W = sparse.csr_matrix(step.W)
            W.eliminate_zeros()
            self._weights[k] = W, [_rational(float(c)) for c in W.data]
        W, numerals = self._weights[k]
        inputs = tuple(x.get_id() for x in xs)
        if self._terms.get(k, ((), None))[0] != inputs:
            self._terms[k] = inputs, [
                _sum_of_products(numerals[W.indptr[i]:W.indptr[i + 1]], W.indices[W.indptr[i]:W.indptr[i + 1]], xs,
                                 float(step.b[i])) for i in range(W.shape[0])]
        out = self._terms[k][1]
        if step.rel_error == 0:
            return out, []
        errors = [z3.Real(f"E{k}_{i}") for i in range(len(out))]
        limits = _affine_errors(step, W, k, bounds)
        constraints = [c for e, m in zip(errors, limits) for c in (e >= -m, e <= m)]
        return [t + e for t, e in zip(out, errors)], constraints


def _variables(k: int, n: int) -> Terms:
    """Fresh variables for the outputs of nonlinear step k (value k + 1)."""
    return [z3.Real(f"N{k + 1}_{i}") for i in range(n)]


def _encode_nonlinear(step: Step, k: int, xs: Terms, bounds: Bounds | None) -> tuple[Terms, list[z3.BoolRef]]:
    """MaxPool, ReLU, Sigmoid or Tanh: their constraints depend on the bounds, so are built each time."""
    if isinstance(step, MaxPool):
        return _encode_maxpool(step, k, xs, bounds)
    if step.kind == "Relu":
        return _encode_relu(k, xs, bounds)
    return _encode_smooth(step.kind, k, xs, bounds)


def _affine_errors(step: Affine, W: sparse.csr_matrix, k: int, bounds: Bounds | None) -> list[z3.RatNumRef]:
    if bounds is None:
        raise ValueError(f"step {k} ({', '.join(step.layers)}) was formed with rounding (rel_error "
                         f"{step.rel_error:g}): encoding it soundly needs step_bounds")
    magnitude = np.maximum(np.abs(bounds[0]), np.abs(bounds[1]))
    total = step.rel_error * (np.asarray(abs(W) @ magnitude) + np.abs(step.b))
    # Summing n non-negative floats errs by at most n*2^-53 relatively: a 2^-20 margin covers any n.
    return [_rational(_up(t * (1 + 2.0 ** -20))) for t in total]


def _encode_relu(k: int, zs: Terms, bounds: Bounds | None) -> tuple[Terms, list[z3.BoolRef]]:
    """Stable ReLUs (sound bounds not straddling 0) pass their input or 0 on, with no variable;
    unstable ones get a variable y, the disjunction (z >= 0 and y = z) or (z <= 0 and y = 0), and,
    with bounds l < 0 < u, the triangle cuts y >= 0, y >= z, y <= u (z - l) / (u - l):
    with them Z3's own simplex sees the triangle relaxation, so what LP bounds refute needs no split."""
    lo, hi = bounds if bounds is not None else (np.full(len(zs), -np.inf), np.full(len(zs), np.inf))
    out: Terms = []
    constraints = []
    for i, z in enumerate(zs):
        if lo[i] >= 0 or hi[i] <= 0:
            out.append(z if lo[i] >= 0 else _rational(0))
            continue
        y = z3.Real(f"N{k + 1}_{i}")
        out.append(y)
        constraints.append(z3.Or(z3.And(z >= 0, y == z), z3.And(z <= 0, y == 0)))
        if bounds is not None:
            l, u = _down(lo[i]), _up(hi[i])
            constraints += [y >= 0, y >= z, y <= _rational(u / (u - l)) * (z - _rational(l))]
    return out, constraints


def _encode_maxpool(step: MaxPool, k: int, xs: Terms, bounds: Bounds | None) -> tuple[Terms, list[z3.BoolRef]]:
    """y = max of the window as: y >= every member, y equals one of them. A member whose upper bound
    is below another's lower bound can never be the max and is left out of the disjunction."""
    ys = _variables(k, step.groups.shape[0])
    constraints = []
    for group, y in zip(step.groups, ys):
        members = group[group >= 0]
        constraints += [y >= xs[j] for j in members]
        if bounds is not None:
            members = members[bounds[1][members] >= bounds[0][members].max()]
        constraints.append(z3.Or([y == xs[j] for j in members]))
    return ys, constraints


def _encode_smooth(kind: str, k: int, zs: Terms, bounds: Bounds | None) -> tuple[Terms, list[z3.BoolRef]]:
    """Sigmoid/Tanh enclosed soundly: y in [f(l), f(u)] (f is monotone), and where f has one
    curvature on [l, u] the chord on one side and the tangent at the midpoint on the other."""
    ys = _variables(k, len(zs))
    low, high = SMOOTH_RANGE[kind]
    if bounds is None:
        return ys, [c for y in ys for c in (y >= low, y <= high)]
    lo, hi = np.asarray(bounds[0], np.float64), np.asarray(bounds[1], np.float64)
    f = Activation(kind, len(zs)).forward
    f_lo, f_hi = f(lo), f(hi)
    constraints = []
    for i, (z, y) in enumerate(zip(zs, ys)):
        constraints += [y >= _rational(max(Fraction(low), Fraction(f_lo[i]) - Fraction(SMOOTH_SLACK))),
                        y <= _rational(min(Fraction(high), Fraction(f_hi[i]) + Fraction(SMOOTH_SLACK)))]
        if (lo[i] >= 0 or hi[i] <= 0) and hi[i] - lo[i] > 2 ** -20:
            constraints += _chord_and_tangent(kind, z, y, lo[i], hi[i], f_lo[i], f_hi[i])
    return ys, constraints


def _chord_and_tangent(kind: str, z, y, lo: float, hi: float, f_lo: float, f_hi: float) -> list[z3.BoolRef]:
    """On [lo, hi] >= 0 f is concave: chord below, tangent above; on [lo, hi] <= 0 the reverse.
    The chord joins points shifted outward, in exact rationals; the tangent is shifted outward by the
    value error plus the slope error times the distance from the midpoint."""
    side = 1 if lo >= 0 else -1                               # +1: concave
    l, u = Fraction(lo), Fraction(hi)
    a, b = Fraction(f_lo) - side * Fraction(SMOOTH_SLACK), Fraction(f_hi) - side * Fraction(SMOOTH_SLACK)
    chord = _rational(a) + _rational((b - a) / (u - l)) * (z - _rational(l))
    mid = (lo + hi) / 2
    f_mid = float(Activation(kind, 1).forward(np.array([mid]))[0])
    slope = Fraction(float(SMOOTH_SLOPE[kind](f_mid)))
    margin = Fraction(SMOOTH_SLACK) * (1 + max(Fraction(mid) - l, u - Fraction(mid)))
    tangent = _rational(Fraction(f_mid) + side * margin) + _rational(slope) * (z - _rational(Fraction(mid)))
    if side > 0:
        return [y >= chord, y <= tangent]
    return [y <= chord, y >= tangent]


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
    lhs = _linear(a[columns], columns, ys)
    return lhs < _rational(b) if strict else lhs <= _rational(b)


def phase_condition(encoding: Encoding, decisions: Sequence[tuple[int, int, bool]]) -> z3.BoolRef:
    """ReLU phase decisions (step k, neuron j, active): the input of step k at j is >= 0 (active)
    or <= 0. Bounds that encode a decision make the ReLU look stable, so the encoding passes it on
    without its phase; this restores the phase as a constraint on the inputs."""
    return z3.And([encoding.values[k][j] >= 0 if active else encoding.values[k][j] <= 0
                   for k, j, active in decisions])


def box_condition(encoding: Encoding, lower: Sequence[Fraction], upper: Sequence[Fraction]) -> z3.BoolRef:
    """x inside a sub-box of the encoding's box (one case of a disjunctive property)."""
    return z3.And([c for x, lo, hi in zip(encoding.inputs, lower, upper)
                   for c in (x >= _rational(lo), x <= _rational(hi))])


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
    """One solver holding an encoding; leaves (ReLU phase fixings, output disjuncts, sub-boxes) are
    asked of it under push/pop, so the network is asserted and preprocessed once."""

    def __init__(self, encoding: Encoding) -> None:
        self.encoding = encoding
        self.solver = _make_solver()
        self.solver.add(encoding.constraints)

    def check_under(self, assumptions: Sequence[z3.BoolRef], timeout_s: float
                    ) -> tuple[str, np.ndarray | str | None]:
        """('sat', x as float64) | ('unsat', None) | ('unknown', reason)."""
        self.solver.push()
        try:
            self.solver.add(list(assumptions))
            return self.check(timeout_s)
        finally:
            self.solver.pop()

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
    """A solver holding the encoding and the condition, to check once (no push/pop: a push
    preprocesses outside the timeout). Asserting takes a while on a big net, and Z3's timeout does
    not cover it: 8-15 s for a 5-input net of four 300-wide ReLU layers, 1 000 of them unstable."""
    decider = Decider.__new__(Decider)
    decider.encoding, decider.solver = encoding, _make_solver()
    decider.solver.add(encoding.constraints + [condition])
    return decider


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
    from .pwl import to_chain
    from .vnnlib import read_vnnlib

    chain = to_chain(load_onnx(network_path))
    prop = read_vnnlib(vnnlib_path, chain.n_inputs, chain.n_outputs)
    box = hull(prop.cases)
    encoding = encode_chain(chain, box, step_bounds(chain, box, lp_seconds))
    comment = (f"network: {Path(network_path).name}\nproperty: {Path(vnnlib_path).name}\n"
               "sat means a counterexample exists (an input in the box meeting the unsafe condition)")
    Path(out_path).write_text(to_smtlib2(encoding, property_condition(encoding, prop.cases), comment))
    return encoding
