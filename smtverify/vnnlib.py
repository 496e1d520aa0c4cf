"""A small strict reader for VNN-LIB, the verification competition's property format.

A file declares inputs X_i and outputs Y_j and asserts the input region AND the *unsafe* output
condition. The conjunction of all asserts is put in disjunctive normal form; each disjunct splits
into a box over X (bounds of single inputs by constants) and linear constraints over Y. Disjuncts
with the same box are grouped into one Case, as the competition's reference reader does. Bounds are
kept exactly as written (Fractions), for exact reasoning and exact containment checks.

No maintained PyPI package parses every file of the competition benchmarks with exact bounds and
clear errors, so this module is the project's own (about 250 lines, regex tokeniser).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import VnnlibError

MAX_DNF_TERMS = 10_000
_TOKEN = re.compile(r"(\s+)|(;[^\n]*)|(\()|(\))|([^\s();]+)")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_VARIABLE = re.compile(r"([XY])_(\d+)")
_IGNORED_COMMANDS = {"set-logic", "set-info", "set-option", "check-sat", "get-model", "exit"}


@dataclass(frozen=True)
class OutputConstraint:
    """The conjunction A @ y <= b, row-wise; strict[i] marks a '<' row."""

    A: np.ndarray
    b: np.ndarray
    strict: np.ndarray

    def holds(self, y: np.ndarray) -> np.ndarray:
        """y (..., n_outputs) -> bool (...); strict rows are checked strictly."""
        lhs = np.asarray(y, dtype=np.float64) @ self.A.T
        return np.all(np.where(self.strict, lhs < self.b, lhs <= self.b), axis=-1)


@dataclass(frozen=True)
class InputBox:
    lower: np.ndarray
    upper: np.ndarray
    lower_exact: tuple[Fraction, ...]
    upper_exact: tuple[Fraction, ...]

    def contains(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return np.all((x >= self.lower) & (x <= self.upper), axis=-1)


@dataclass(frozen=True)
class Case:
    """Unsafe iff x is in the box and any of the constraints holds on y = N(x)."""

    box: InputBox
    unsafe: tuple[OutputConstraint, ...]


@dataclass(frozen=True)
class Property:
    path: str
    n_inputs: int
    n_outputs: int
    cases: tuple[Case, ...]

    def is_unsafe(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Batched: does the concrete pair (x, y) violate the property?"""
        x, y = np.atleast_2d(x), np.atleast_2d(y)
        verdict = np.zeros(x.shape[0], dtype=bool)
        for case in self.cases:
            hit = np.any([c.holds(y) for c in case.unsafe], axis=0) if case.unsafe else True
            verdict |= case.box.contains(x) & hit
        return verdict


class _List(list):
    """An S-expression list that remembers the line it starts on."""

    line = 0


@dataclass
class _Row:
    """sum(coeffs[v] * v) + const  (< if strict else <=)  0, from a comparison on `line`."""

    coeffs: dict[str, Fraction]
    const: Fraction
    strict: bool
    line: int


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.declared: dict[str, int] = {}

    def fail(self, what: str, line: int | None = None) -> VnnlibError:
        return VnnlibError(what, file=self.path, line=line)

    # ----- S-expressions ---------------------------------------------------------------------
    def parse(self, text: str) -> list[_List]:
        stack: list[_List] = [_List()]
        line = 1
        for match in _TOKEN.finditer(text):
            space, _comment, opening, closing, atom = match.groups()
            if space is not None:
                line += space.count("\n")
            elif opening:
                node = _List()
                node.line = line
                stack[-1].append(node)
                stack.append(node)
            elif closing:
                if len(stack) == 1:
                    raise self.fail("unbalanced ')'", line)
                stack.pop()
            elif atom is not None:
                stack[-1].append(atom)
        if len(stack) > 1:
            raise self.fail("unbalanced '(': the form opened here is never closed", stack[-1].line)
        return stack[0]

    # ----- terms and formulas ----------------------------------------------------------------
    def term(self, node, line: int) -> tuple[dict[str, Fraction], Fraction]:
        """A linear term as (coefficients, constant)."""
        if isinstance(node, str):
            if _NUMBER.fullmatch(node):
                return {}, Fraction(node)
            if node in self.declared:
                return {node: Fraction(1)}, Fraction(0)
            if _VARIABLE.fullmatch(node):
                raise self.fail(f"variable '{node}' is used but never declared", line)
            raise self.fail(f"'{node}' is neither a number nor a declared X_i / Y_j variable", line)
        if not node or not isinstance(node[0], str):
            raise self.fail("empty or malformed term", node.line)
        head, args = node[0], [self.term(a, node.line) for a in node[1:]]
        if head == "+" and args:
            return _sum(args)
        if head == "-" and len(args) == 1:
            return _scale(args[0], Fraction(-1))
        if head == "-" and len(args) > 1:
            return _sum([args[0]] + [_scale(a, Fraction(-1)) for a in args[1:]])
        if head == "*" and args:
            variable = [a for a in args if a[0]]
            if len(variable) > 1:
                raise self.fail("non-linear term: a product of variables", node.line)
            factor = Fraction(1)
            for coeffs, const in args:
                if not coeffs:
                    factor *= const
            return _scale(variable[0], factor) if variable else ({}, factor)
        raise self.fail(f"unsupported term '{head}' with {len(args)} argument(s)", node.line)

    def formula(self, node) -> list[list[_Row]]:
        """A formula in DNF: a list of conjunctions of rows."""
        if isinstance(node, str) or not node or not isinstance(node[0], str):
            raise self.fail("expected a comparison, 'and' or 'or'", getattr(node, "line", None))
        head = node[0]
        if head == "and":
            terms: list[list[_Row]] = [[]]
            for part in node[1:]:
                terms = self.conjoin(terms, self.formula(part), node.line)
            return terms
        if head == "or":
            terms = [t for part in node[1:] for t in self.formula(part)]
            if len(terms) > MAX_DNF_TERMS:
                raise self.fail(f"the formula has over {MAX_DNF_TERMS} disjuncts in normal form", node.line)
            return terms
        if head in ("<=", ">=", "<", ">", "="):
            return [self.comparison(node)]
        raise self.fail(f"unsupported connective or comparison '{head}'", node.line)

    def conjoin(self, left: list[list[_Row]], right: list[list[_Row]], line: int) -> list[list[_Row]]:
        if len(left) * len(right) > MAX_DNF_TERMS:
            raise self.fail(f"the formula has over {MAX_DNF_TERMS} disjuncts in normal form", line)
        if len(right) == 1:
            for term in left:
                term.extend(right[0])
            return left
        return [a + b for a in left for b in right]

    def comparison(self, node: _List) -> list[_Row]:
        if len(node) != 3:
            raise self.fail(f"'{node[0]}' expects exactly 2 arguments", node.line)
        op, left, right = node
        if op in ("<=", ">=") and isinstance(left, str) and left in self.declared \
                and isinstance(right, str) and _NUMBER.fullmatch(right):
            sign = 1 if op == "<=" else -1      # the common bound of one variable: no term algebra
            return [_Row({left: Fraction(sign)}, -sign * Fraction(right), False, node.line)]
        (ca, ka), (cb, kb) = self.term(node[1], node.line), self.term(node[2], node.line)
        difference = _sum([(ca, ka), _scale((cb, kb), Fraction(-1))])          # a - b
        negated = _scale(difference, Fraction(-1))                              # b - a
        op = node[0]
        if op == "=":
            return [_Row(*difference, False, node.line), _Row(*negated, False, node.line)]
        coeffs, const = difference if op in ("<=", "<") else negated
        return [_Row(coeffs, const, op in ("<", ">"), node.line)]

    # ----- commands --------------------------------------------------------------------------
    def read(self, text: str) -> tuple[list[_Row], list[list[_Row]]]:
        """(rows every disjunct shares, the disjuncts' own rows): shared rows are handled once."""
        common: list[_Row] = []
        terms: list[list[_Row]] = [[]]
        for command in self.parse(text):
            if isinstance(command, str) or not command or not isinstance(command[0], str):
                raise self.fail("expected a command such as (declare-const ...) or (assert ...)",
                                getattr(command, "line", None))
            head = command[0]
            if head == "declare-const":
                self.declare(command)
            elif head == "assert" and len(command) == 2:
                dnf = self.formula(command[1])
                if len(dnf) == 1:
                    common.extend(dnf[0])
                else:
                    terms = self.conjoin(terms, dnf, command.line)
            elif head not in _IGNORED_COMMANDS:
                raise self.fail(f"unknown or malformed command '{head}'", command.line)
        return common, terms

    def declare(self, command: _List) -> None:
        if len(command) != 3 or command[2] != "Real" or not isinstance(command[1], str):
            raise self.fail("expected (declare-const NAME Real)", command.line)
        name = command[1]
        if not _VARIABLE.fullmatch(name):
            raise self.fail(f"variable '{name}' must be named X_i (input) or Y_j (output)", command.line)
        if name in self.declared:
            raise self.fail(f"variable '{name}' is declared twice", command.line)
        self.declared[name] = command.line


def _sum(parts: list[tuple[dict[str, Fraction], Fraction]]) -> tuple[dict[str, Fraction], Fraction]:
    coeffs: dict[str, Fraction] = {}
    const = Fraction(0)
    for c, k in parts:
        const += k
        for name, value in c.items():
            coeffs[name] = coeffs.get(name, Fraction(0)) + value
    return {n: v for n, v in coeffs.items() if v != 0}, const


def _scale(part: tuple[dict[str, Fraction], Fraction], factor: Fraction) -> tuple[dict[str, Fraction], Fraction]:
    coeffs, const = part
    return {n: v * factor for n, v in coeffs.items() if v * factor != 0}, const * factor


def _count(declared: dict[str, int], kind: str, expected: int | None, reader: _Reader) -> int:
    indices = sorted(int(n[2:]) for n in declared if n[0] == kind)
    if indices != list(range(len(indices))):
        raise reader.fail(f"{kind} variables must be {kind}_0 .. {kind}_{len(indices) - 1} with no gaps")
    if expected is not None and len(indices) != expected:
        raise reader.fail(f"declares {len(indices)} {kind} variables; the network has {expected}")
    return len(indices)


def read_vnnlib(path: str | Path, n_inputs: int | None = None, n_outputs: int | None = None) -> Property:
    """Read a VNN-LIB file; n_inputs/n_outputs (from the network) are checked when given."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise VnnlibError(f"cannot read: {error}", file=path) from None
    reader = _Reader(path)
    common, terms = reader.read(text)
    n_in = _count(reader.declared, "X", n_inputs, reader)
    n_out = _count(reader.declared, "Y", n_outputs, reader)
    shared = _Conjunction(n_in, n_out)
    if not shared.add(common, reader):
        terms = []                       # the shared part is false: nothing is ever unsafe
    elif all(v is not None for v in shared.lower + shared.upper):
        shared.box = shared._box(reader)  # disjuncts that add no input bound reuse this box
    groups: list[tuple[InputBox, list[OutputConstraint]]] = []
    index: dict[object, int] = {}
    for term in terms:
        split = shared.copy().close(term, reader)
        if split is None:
            continue
        box, constraint = split
        key = "shared" if box is shared.box else tuple(
            (f.numerator, f.denominator) for f in box.lower_exact + box.upper_exact)
        if key not in index:
            index[key] = len(groups)
            groups.append((box, []))
        groups[index[key]][1].append(constraint)
    return Property(str(path), n_in, n_out, tuple(Case(b, tuple(c)) for b, c in groups))


class _Conjunction:
    """Input bounds and output rows of one conjunction, filled row by row."""

    def __init__(self, n_in: int, n_out: int) -> None:
        self.n_out = n_out
        self.lower: list[Fraction | None] = [None] * n_in
        self.upper: list[Fraction | None] = [None] * n_in
        self.rows: list[np.ndarray] = []
        self.rhs: list[float] = []
        self.strict: list[bool] = []
        self.box: InputBox | None = None      # built once and shared while no input row changes it

    def copy(self) -> "_Conjunction":
        other = _Conjunction(len(self.lower), self.n_out)
        other.lower, other.upper = list(self.lower), list(self.upper)
        other.rows, other.rhs, other.strict = list(self.rows), list(self.rhs), list(self.strict)
        other.box = self.box
        return other

    def add(self, rows: list[_Row], reader: _Reader) -> bool:
        """Conjoin rows; False when a constant row makes the conjunction false."""
        for row in rows:
            kinds = {name[0] for name in row.coeffs}
            if not row.coeffs:
                if row.const > 0 or (row.strict and row.const == 0):
                    return False
            elif kinds == {"X"}:
                _bound(row, self.lower, self.upper, reader)
                self.box = None
            elif kinds == {"Y"}:
                a = np.zeros(self.n_out)
                for name, value in row.coeffs.items():
                    a[int(name[2:])] = float(value)
                self.rows.append(a)
                self.rhs.append(float(-row.const))
                self.strict.append(row.strict)
            else:
                raise reader.fail("a constraint mixing inputs and outputs is not supported", row.line)
        return True

    def close(self, term: list[_Row], reader: _Reader) -> tuple[InputBox, OutputConstraint] | None:
        """With a disjunct's own rows: (input box, output constraint), or None if false."""
        if not self.add(term, reader):
            return None
        if self.box is None:
            self.box = self._box(reader)
        constraint = OutputConstraint(np.array(self.rows).reshape(-1, self.n_out), np.array(self.rhs, dtype=np.float64),
                                      np.array(self.strict, dtype=bool))
        return self.box, constraint

    def _box(self, reader: _Reader) -> InputBox:
        for i, (low, high) in enumerate(zip(self.lower, self.upper)):
            if low is None or high is None:
                raise reader.fail(f"input X_{i} needs both a lower and an upper bound")
            if low > high:
                raise reader.fail(f"input X_{i} has an empty range [{float(low)}, {float(high)}]")
        return InputBox(np.array([float(v) for v in self.lower]), np.array([float(v) for v in self.upper]),
                        tuple(self.lower), tuple(self.upper))


def _bound(row: _Row, lower: list, upper: list, reader: _Reader) -> None:
    """a*x + c <= 0 becomes an upper (a > 0) or lower (a < 0) bound of x, intersected."""
    if len(row.coeffs) != 1:
        raise reader.fail("only bounds of single inputs by constants are supported for X", row.line)
    if row.strict:
        raise reader.fail("strict bounds on inputs are not supported (use <= or >=)", row.line)
    (name, a), = row.coeffs.items()
    i = int(name[2:])
    value = -row.const if a == 1 else row.const if a == -1 else -row.const / a
    if a > 0:
        upper[i] = value if upper[i] is None else min(upper[i], value)
    else:
        lower[i] = value if lower[i] is None else max(lower[i], value)
