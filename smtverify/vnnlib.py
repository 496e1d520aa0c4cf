"""A small strict reader for VNN-LIB, the verification competition's property format.

A file declares inputs X_i and outputs Y_j and asserts the input region AND the *unsafe* output
condition. The conjunction of all asserts is put in disjunctive normal form (DNF); each disjunct
splits into a box over X (bounds of single inputs by constants) and linear rows `a·y <= b` over Y.
Disjuncts with the same box are grouped into one Case, as the competition's reference reader
`read_vnnlib_simple` does. Input bounds are also kept exactly as written (Fractions) so that
exact (rational) reasoning sees the literal, not its nearest float.

Anything outside this linear fragment is refused with a `VnnlibError` naming the file and line:
a silently misread property would make every verdict built on it wrong.
"""
from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, NoReturn, Sequence, Union

import numpy as np

from .errors import VnnlibError
from .sexpr import Form, parse

MAX_DNF_TERMS = 10_000
MAX_LITERAL_LENGTH = 2_000      # room for the exact decimal of any float64 (up to 767 digits)
# ASCII only: `\d` would also take other scripts' digits, reading X_1\u0663 as X_13.
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", re.ASCII)
_VARIABLE = re.compile(r"([XY])_(0|[1-9]\d*)", re.ASCII)
_FLOAT_MAX = Fraction(sys.float_info.max)
_COMPARISONS = {"<=", ">=", "<", ">", "="}
# SMT-LIB boilerplate that does not change the property.
_IGNORED_COMMANDS = {"set-logic", "set-info", "set-option", "check-sat", "get-model", "exit"}
_ZERO, _ONE = Fraction(0), Fraction(1)
_BLANK_OR_COMMENT = re.compile(r"\s+|;[^\n]*")
_VERSION_COMMAND = re.compile(r"\(\s*vnnlib-version\b")


@dataclass(frozen=True)
class OutputConstraint:
    """The conjunction A @ y <= b, row-wise; strict[i] marks a '<' row. No rows: always holds.

    `b` is each right-hand side rounded up to a float, so a bound proving A_i y > b_i proves the
    row false; `b_exact` keeps them as written, for exact checks of counterexamples."""

    A: np.ndarray
    b: np.ndarray
    strict: np.ndarray
    b_exact: tuple[Fraction, ...] | None = None

    def rhs_exact(self, row: int) -> Fraction:
        return self.b_exact[row] if self.b_exact is not None else Fraction(float(self.b[row]))

    def holds(self, y: np.ndarray) -> np.ndarray:
        """y (..., n_outputs) -> bool (...); strict rows are checked strictly."""
        lhs = np.asarray(y, dtype=np.float64) @ self.A.T
        return np.all(np.where(self.strict, lhs < self.b, lhs <= self.b), axis=-1)


@dataclass(frozen=True)
class InputBox:
    """Closed bounds per input, exactly as written in the file and as float64 rounded outward (so
    the float box contains the exact one and bounds over it hold for every real point of it)."""

    lower: np.ndarray
    upper: np.ndarray
    lower_exact: tuple[Fraction, ...]
    upper_exact: tuple[Fraction, ...]

    @classmethod
    def from_floats(cls, lower: np.ndarray | Sequence[float], upper: np.ndarray | Sequence[float]) -> InputBox:
        """The box [lower, upper] of float bounds: each float is its own exact bound, so nothing is
        rounded (for boxes made in code rather than read from a file)."""
        lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
        return cls(lower, upper, tuple(map(Fraction, lower.tolist())), tuple(map(Fraction, upper.tolist())))

    def contains(self, x: np.ndarray) -> np.ndarray:
        """x (..., n_inputs) -> bool (...), against the float64 bounds."""
        x = np.asarray(x, dtype=np.float64)
        return np.all((x >= self.lower) & (x <= self.upper), axis=-1)


@dataclass(frozen=True)
class Case:
    """Unsafe iff x is in the box and any of the constraints holds on y = N(x)."""

    box: InputBox
    unsafe: tuple[OutputConstraint, ...]


@dataclass(frozen=True)
class Property:
    """The property is violated (sat) iff some case has a counterexample."""

    path: str
    n_inputs: int
    n_outputs: int
    cases: tuple[Case, ...]

    def is_unsafe(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """x (..., n_inputs), y (..., n_outputs) -> bool (...): is y = N(x) a counterexample?"""
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        verdict = np.zeros(np.broadcast_shapes(x.shape[:-1], y.shape[:-1]), dtype=bool)
        for case in self.cases:
            hit = np.zeros_like(verdict)
            for constraint in case.unsafe:
                hit |= constraint.holds(y)
            verdict |= case.box.contains(x) & hit
        return verdict


class _Bound(NamedTuple):
    """X_index <= value (upper) or X_index >= value, from a comparison on `line`."""

    index: int
    value: Fraction
    upper: bool
    line: int


class _Row(NamedTuple):
    """sum(coeffs[j] * Y_j) <= rhs, or < when strict."""

    coeffs: dict[int, Fraction]
    rhs: Fraction
    strict: bool


Atom = Union[_Bound, _Row]
Dnf = list[list[Atom]]                        # a disjunction of conjunctions of atoms
_Linear = tuple[dict[str, Fraction], Fraction]  # sum(coeffs[name] * name) + constant


class Reader:
    """Turns the S-expressions of one file into declarations and the asserts' DNF. The 2.0 reader
    (vnnlib2.py) reuses its atoms, DNF and checks on the official parser's tree, so that both
    versions are held to the same fragment and read into the same Property."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.declared: dict[str, int] = {}    # variable name -> line of its declaration

    def fail(self, what: str, line: int | None = None) -> NoReturn:
        raise VnnlibError(what, file=self.path, line=line)

    def read(self, text: str) -> tuple[list[Atom], Dnf]:
        """(atoms every disjunct shares, the disjuncts' own atoms): shared atoms are kept once."""
        common: list[Atom] = []
        disjuncts: Dnf = [[]]
        for command in parse(text, self.fail):
            if not command or not isinstance(command[0], str):
                self.fail("expected a command such as (declare-const X_0 Real) or (assert ...)",
                          command.line)
            head = command[0]
            if head == "declare-const":
                self.declare(command)
            elif head == "assert":
                if len(command) != 2:
                    self.fail("'assert' takes exactly one formula", command.line)
                disjuncts = self.assertion(command[1], command.line, common, disjuncts)
            elif head not in _IGNORED_COMMANDS:
                self.fail(f"unknown command '{head}'", command.line)
        return common, disjuncts

    def assertion(self, formula: object, line: int, common: list[Atom], disjuncts: Dnf) -> Dnf:
        """Conjoins one asserted formula: a single conjunction goes into `common`, which every
        disjunct shares; a disjunction multiplies the disjuncts, which are returned."""
        dnf = self.formula(formula, line)
        if len(dnf) == 1:
            common.extend(dnf[0])
            return disjuncts
        return self.conjoin(disjuncts, dnf, line)

    def declare(self, command: Form) -> None:
        if len(command) != 3 or not isinstance(command[1], str) or command[2] != "Real":
            self.fail("expected (declare-const NAME Real)", command.line)
        name = command[1]
        if not _VARIABLE.fullmatch(name):
            self.fail(f"variable '{name}' must be named X_i (an input) or Y_i (an output), "
                      "i a number without leading zeros", command.line)
        if name in self.declared:
            self.fail(f"variable '{name}' is already declared on line {self.declared[name]}",
                      command.line)
        self.declared[name] = command.line

    def property(self, common: list[Atom], disjuncts: Dnf, n_inputs: int | None,
                 n_outputs: int | None) -> Property:
        """The Property of the declared variables and the asserts' DNF, as `read` returns it."""
        n_in, n_out = self.count("X", n_inputs), self.count("Y", n_outputs)
        return Property(str(self.path), n_in, n_out, _cases(common, disjuncts, n_in, n_out, self))

    def count(self, kind: str, expected: int | None) -> int:
        """How many `kind` variables there are; they must be kind_0 .. kind_{n-1}, all declared."""
        what = "inputs" if kind == "X" else "outputs"
        lines = {int(name[2:]): line for name, line in self.declared.items() if name[0] == kind}
        n = max(lines, default=-1) + 1
        missing = next((i for i in range(n) if i not in lines), None)
        if missing is not None:
            self.fail(f"{kind}_{missing} is not declared, but {kind}_{n - 1} is", lines[n - 1])
        if expected is not None and n != expected:
            self.fail(f"the file declares {n} {what} {kind}_i but the network has {expected}",
                      lines.get(n - 1))
        return n

    def formula(self, node: object, line: int) -> Dnf:
        """A formula in DNF."""
        if not isinstance(node, Form) or len(node) < 2 or not isinstance(node[0], str):
            self.fail("expected a comparison or an 'and' / 'or' of them", line)
        head = node[0]
        if head in _COMPARISONS:
            return [self.comparison(node)]
        if head == "and":
            dnf: Dnf = [[]]
            for part in node[1:]:
                dnf = self.conjoin(dnf, self.formula(part, node.line), node.line)
            return dnf
        if head == "or":
            dnf = [term for part in node[1:] for term in self.formula(part, node.line)]
            if len(dnf) > MAX_DNF_TERMS:
                self.fail(f"the formula has more than {MAX_DNF_TERMS} disjuncts in DNF", node.line)
            return dnf
        self.fail(f"unsupported connective or comparison '{head}'", node.line)

    def conjoin(self, left: Dnf, right: Dnf, line: int) -> Dnf:
        """left AND right in DNF; extends in place when right is one term, the common case."""
        if len(left) * len(right) > MAX_DNF_TERMS:
            self.fail(f"the formula has more than {MAX_DNF_TERMS} disjuncts in DNF", line)
        if len(right) == 1:
            for term in left:
                term.extend(right[0])
            return left
        return [a + b for a in left for b in right]

    def comparison(self, node: Form) -> list[Atom]:
        """One comparison as atoms: `=` gives two, a comparison of constants that holds none."""
        if len(node) != 3:
            self.fail(f"'{node[0]}' takes exactly two arguments", node.line)
        (left, left_constant), (right, right_constant) = (self.term(node[1], node.line),
                                                          self.term(node[2], node.line))
        coeffs = _add(left, right, -1)
        rhs = right_constant - left_constant if left_constant else right_constant
        if node[0] == "=":
            return self.atoms(coeffs, "<=", rhs, node.line) + self.atoms(coeffs, ">=", rhs, node.line)
        return self.atoms(coeffs, node[0], rhs, node.line)

    def atoms(self, coeffs: dict[str, Fraction], op: str, rhs: Fraction, line: int) -> list[Atom]:
        """`coeffs·v op rhs` as an input bound or an output row (none if it always holds)."""
        below, strict = op in ("<=", "<"), op in ("<", ">")
        if not coeffs:
            slack = rhs if below else -rhs
            if slack > 0 or (slack == 0 and not strict):
                return []
            self.fail("the comparison of constants is always false", line)
        kinds = {name[0] for name in coeffs}
        if kinds == {"Y"}:
            self.within_float_range(list(coeffs.values()) + [rhs], "a coefficient or the constant", line)
            sign = 1 if below else -1
            return [_Row({int(name[2:]): sign * a for name, a in coeffs.items()}, sign * rhs, strict)]
        if len(kinds) > 1:
            self.fail("a constraint mixing inputs X and outputs Y is not supported", line)
        if len(coeffs) > 1:
            self.fail("a constraint relating several inputs X is not supported: "
                      "inputs may only be bounded by constants", line)
        if strict:
            self.fail("strict bounds on inputs X are not supported: use <= or >=", line)
        ((name, a),) = coeffs.items()
        value = rhs if a == 1 else rhs / a
        self.within_float_range([value], f"the bound on {name}", line)
        return [_Bound(int(name[2:]), value, below == (a > 0), line)]

    def term(self, node: object, line: int) -> _Linear:
        """A linear term."""
        if isinstance(node, str):
            return self.symbol(node, line)
        if not node or not isinstance(node[0], str):
            self.fail("expected a term: a number, a variable or (+ ...), (- ...), (* ...)", line)
        head, line = node[0], node.line
        args = [self.term(arg, line) for arg in node[1:]]
        if head == "+" and args:
            return _sum(args[0], args[1:], 1)
        if head == "-" and len(args) == 1:
            return _sum(({}, _ZERO), args, -1)
        if head == "-" and args:
            return _sum(args[0], args[1:], -1)
        if head == "*" and args:
            return self.product(args, line)
        self.fail(f"unsupported term '{head}' with {len(args)} argument(s)", line)

    def product(self, args: list[_Linear], line: int) -> _Linear:
        """A product with at most one non-constant factor; more would be non-linear."""
        variable = [arg for arg in args if arg[0]]
        if len(variable) > 1:
            self.fail("non-linear term: a product of variables", line)
        factor = _ONE
        for coeffs, constant in args:
            if not coeffs:
                factor *= constant
        return _sum(({}, _ZERO), variable or [({}, _ONE)], factor)

    def literal(self, token: str, line: int) -> Fraction:
        """A number as written; one beyond float64's range could not become a float bound."""
        if len(token) > MAX_LITERAL_LENGTH:
            self.fail(f"number '{token[:20]}...' is longer than {MAX_LITERAL_LENGTH} characters", line)
        value = _exact(token)
        if value is None:
            self.fail(f"number '{token}' is outside float64's range (it would round to infinity or to zero)", line)
        return value

    def within_float_range(self, values: list[Fraction], what: str, line: int | None) -> None:
        """Products and quotients of literals can leave float64's range, which every bound and row
        is converted to; refused here, where the line is known."""
        if any(abs(v) > _FLOAT_MAX for v in values):
            self.fail(f"{what} is beyond float64's range (about 1.8e308)", line)

    def symbol(self, token: str, line: int) -> _Linear:
        if token in self.declared:
            return {token: _ONE}, _ZERO
        if _NUMBER.fullmatch(token):
            return {}, self.literal(token, line)
        if _VARIABLE.fullmatch(token):
            self.fail(f"variable '{token}' is used but not declared", line)
        if token[0] in "+-.0123456789":
            self.fail(f"bad number '{token}': expected a decimal such as -0.5 or 1.5e-3", line)
        self.fail(f"unknown symbol '{token}': expected a number or a declared X_i / Y_i", line)


@lru_cache(maxsize=1 << 14)
def _exact(number: str) -> Fraction | None:
    """The decimal literal as an exact Fraction, or None if float64 cannot hold it (it overflows to
    infinity, or is not zero but underflows to zero). Checked before the Fraction is built, which
    for 1e-999999999 would take hours. Cached as files repeat literals such as 0.0."""
    decimal = Decimal(number)               # via Decimal: twice as fast as Fraction(str)
    approximate = float(decimal)
    return None if math.isinf(approximate) or (approximate == 0 and decimal != 0) else Fraction(decimal)


def _add(a: dict[str, Fraction], b: dict[str, Fraction], factor: int | Fraction) -> dict[str, Fraction]:
    """Coefficients a + factor * b, dropping zeros; a itself when b is empty (never mutated)."""
    if not b:
        return a
    total = dict(a)
    for name, value in b.items():
        total[name] = total.get(name, _ZERO) + factor * value
        if not total[name]:
            del total[name]
    return total


def _sum(first: _Linear, rest: list[_Linear], factor: int | Fraction) -> _Linear:
    """first + factor * (sum of rest)."""
    coeffs, constant = first
    for other_coeffs, other_constant in rest:
        coeffs = _add(coeffs, other_coeffs, factor)
        constant += factor * other_constant
    return coeffs, constant


class _Bounds:
    """The input bounds of one disjunct, intersected bound by bound."""

    def __init__(self, lower: list[Fraction | None], upper: list[Fraction | None]) -> None:
        self.lower, self.upper = lower, upper

    def copy(self) -> _Bounds:
        return _Bounds(list(self.lower), list(self.upper))

    def add(self, bound: _Bound, reader: Reader) -> None:
        i, value = bound.index, bound.value
        if bound.upper:
            if self.upper[i] is None or value < self.upper[i]:
                self.upper[i] = value
        elif self.lower[i] is None or value > self.lower[i]:
            self.lower[i] = value
        if self.lower[i] is not None and self.upper[i] is not None and self.lower[i] > self.upper[i]:
            reader.fail(f"the input region is empty: X_{i} >= {float(self.lower[i])} and "
                        f"X_{i} <= {float(self.upper[i])}", bound.line)

    def box(self, reader: Reader) -> InputBox:
        for i, (low, high) in enumerate(zip(self.lower, self.upper)):
            if low is None or high is None:
                side = "lower" if low is None else "upper"
                reader.fail(f"input X_{i} has no {side} bound in the input region (every input "
                            "needs both)", reader.declared[f"X_{i}"])
        return InputBox(_frozen([float_toward(v, up=False) for v in self.lower]),
                        _frozen([float_toward(v, up=True) for v in self.upper]), tuple(self.lower), tuple(self.upper))


def float_toward(value: Fraction, up: bool) -> float:
    """The nearest float64 at or above (up) or at or below a rational."""
    x = float(value)
    if up and Fraction(x) < value:
        return float(np.nextafter(x, np.inf))
    if not up and Fraction(x) > value:
        return float(np.nextafter(x, -np.inf))
    return x


def _frozen(values: list) -> np.ndarray:
    """A read-only float64 array: boxes and rows are shared between cases."""
    array = np.array(values, dtype=np.float64)
    array.setflags(write=False)
    return array


def _exact_coefficients(row: _Row, reader: Reader) -> _Row:
    """The row scaled by a positive rational so that every coefficient is a float exactly (0.1 y0
    <= 0.3 becomes y0 <= 3): bounds and checks then use the written row, not a rounded one. Rows
    already exact are kept as written."""
    if all(Fraction(float(a)) == a for a in row.coeffs.values()):
        return row
    scale = math.lcm(*(a.denominator for a in row.coeffs.values()))
    coeffs = {j: a * scale for j, a in row.coeffs.items()}
    if any(abs(a) > 2 ** 53 for a in coeffs.values()):
        reader.fail("an output constraint's coefficients cannot all be made exact floats "
                    f"(scaled by {scale} they exceed 2^53)")
    reader.within_float_range([row.rhs * scale], f"an output constraint's constant scaled by {scale}", None)
    return _Row(coeffs, row.rhs * scale, row.strict)


def _constraint(rows: list[_Row], n_outputs: int, reader: Reader) -> OutputConstraint:
    rows = [_exact_coefficients(row, reader) for row in rows]
    A = np.zeros((len(rows), n_outputs))
    for r, row in enumerate(rows):
        for j, a in row.coeffs.items():
            A[r, j] = float(a)
    A.setflags(write=False)
    strict = np.array([row.strict for row in rows], dtype=bool)
    strict.setflags(write=False)
    return OutputConstraint(A, _frozen([float_toward(row.rhs, up=True) for row in rows]), strict,
                            tuple(row.rhs for row in rows))


def _cases(common: list[Atom], disjuncts: Dnf, n_inputs: int, n_outputs: int,
           reader: Reader) -> tuple[Case, ...]:
    """One Case per distinct box, in order of first appearance; each lists its disjuncts' rows."""
    shared = _Bounds([None] * n_inputs, [None] * n_inputs)
    for bound in (a for a in common if isinstance(a, _Bound)):
        shared.add(bound, reader)
    shared_rows = [a for a in common if isinstance(a, _Row)]
    shared_box: InputBox | None = None
    groups: dict[bytes, list[tuple[InputBox, list[OutputConstraint]]]] = {}
    cases: list[tuple[InputBox, list[OutputConstraint]]] = []
    for disjunct in disjuncts:
        bounds = [a for a in disjunct if isinstance(a, _Bound)]
        if bounds:
            own = shared.copy()
            for bound in bounds:
                own.add(bound, reader)
            box = own.box(reader)
        else:
            shared_box = shared_box or shared.box(reader)
            box = shared_box
        rows = shared_rows + [a for a in disjunct if isinstance(a, _Row)]
        constraint = _constraint(rows, n_outputs, reader)
        same = groups.setdefault(box.lower.tobytes() + box.upper.tobytes(), [])
        match = next((c for c in same if c[0].lower_exact == box.lower_exact
                      and c[0].upper_exact == box.upper_exact), None)
        if match is None:
            match = (box, [])
            same.append(match)
            cases.append(match)
        match[1].append(constraint)
    return tuple(Case(box, tuple(constraints)) for box, constraints in cases)


def _is_version_2(text: str) -> bool:
    """Whether the file opens, after comments and blank space, with VNN-LIB 2.0's mandatory
    `(vnnlib-version <2.x>)`; 1.0 has no such command. Skipped one match at a time: a single
    regular expression for "comments, then the command" backtracks exponentially on ';;;;...'."""
    position, skipped = 0, _BLANK_OR_COMMENT.match(text)
    while skipped and skipped.end() > position:
        position = skipped.end()
        skipped = _BLANK_OR_COMMENT.match(text, position)
    return _VERSION_COMMAND.match(text, position) is not None


def read_vnnlib(path: str | Path, n_inputs: int | None = None,
                n_outputs: int | None = None) -> Property:
    """Read a VNN-LIB file; n_inputs / n_outputs (from the network) are checked when given. A file
    that opens with `(vnnlib-version <...>)` is VNN-LIB 2.0, read through the official parser;
    any other is 1.0, read here."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise VnnlibError(f"cannot read the property file: {error}", file=path) from None
    if _is_version_2(text):
        from .vnnlib2 import read_vnnlib2       # here, not above: vnnlib2 builds on this module
        return read_vnnlib2(path, text, n_inputs, n_outputs)
    reader = Reader(path)
    common, disjuncts = reader.read(text)
    return reader.property(common, disjuncts, n_inputs, n_outputs)
