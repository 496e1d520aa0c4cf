"""The VNN-LIB reader: every benchmark file parses; values checked by hand; each error names file and line."""
from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from smtverify.errors import VnnlibError
from smtverify.vnnlib import MAX_DNF_TERMS, InputBox, float_toward, read_vnnlib

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "benchmarks"
BENCHMARK_FILES = sorted(SHARED.glob("*/vnnlib/*.vnnlib")) if SHARED.is_dir() else []
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/benchmarks is absent")

# (inputs, outputs) of each benchmark folder's networks, from its README.
SHAPES = {"acasxu": (5, 5), "mnistfc": (784, 10), "mnistfc_2021": (784, 10), "verivital": (784, 10),
          "eran": (784, 10), "oval21": (3072, 10)}
SIMPLE_BOUND = re.compile(r"^\(assert \((<=|>=) X_(\d+) (\S+)\)\)", re.MULTILINE)

HEADER = ("(declare-const X_0 Real)\n(declare-const X_1 Real)\n"
          "(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n")                  # lines 1-4
BOX = "(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_1 -1))\n(assert (<= X_1 0.5))\n"  # 5-8


def write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "prop.vnnlib"
    path.write_text(header + body)
    return path


def only_case(prop):
    (case,) = prop.cases
    return case


def rows(*pairs: tuple[dict[int, float], float], n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """A and b of rows given as ({output index: coefficient}, rhs)."""
    A = np.zeros((len(pairs), n))
    for r, (coeffs, _) in enumerate(pairs):
        for j, a in coeffs.items():
            A[r, j] = a
    return A, np.array([rhs for _, rhs in pairs], dtype=float)


def exact(*literals: str) -> tuple[Fraction, ...]:
    return tuple(Fraction(v) for v in literals)


def assert_rows(constraint, A, b, strict=None):
    np.testing.assert_array_equal(constraint.A, A)
    assert constraint.b_exact == tuple(Fraction(v) for v in b)    # these literals are exact floats
    np.testing.assert_array_equal(constraint.b, b)
    np.testing.assert_array_equal(constraint.strict, strict if strict is not None else [False] * len(b))


# ----- every benchmark file -----------------------------------------------------------------------

@needs_shared
@pytest.mark.parametrize("path", BENCHMARK_FILES, ids=lambda p: f"{p.parts[-3]}/{p.name}")
def test_benchmark_file_parses(path):
    expected = SHAPES.get(path.parts[-3], (None, None))
    prop = read_vnnlib(path, *expected)
    assert prop.cases and all(case.unsafe for case in prop.cases)
    for case in prop.cases:
        box = case.box
        assert box.lower.shape == box.upper.shape == (prop.n_inputs,)
        assert np.all(box.lower <= box.upper)
        assert_outward(box.lower, box.lower_exact, up=False)
        assert_outward(box.upper, box.upper_exact, up=True)
        for constraint in case.unsafe:
            assert constraint.A.shape == (len(constraint.b), prop.n_outputs)
            assert constraint.strict.shape == constraint.b.shape
            assert_outward(constraint.b, constraint.b_exact, up=True)
    assert_box_matches_bound_lines(path.read_text(), prop)


def assert_outward(floats, exact, up: bool) -> None:
    """Each float is the nearest float64 on its side of the exact value: a box never shrinks, an
    unsafe right-hand side never tightens."""
    for f, e in zip(floats.tolist(), exact):
        inward = Fraction(float(np.nextafter(f, -np.inf if up else np.inf)))
        assert (inward < e <= Fraction(f)) if up else (Fraction(f) <= e < inward)


def assert_box_matches_bound_lines(text: str, prop) -> None:
    """Where every X bound is a one-line `(assert (<= X_i c))`, the box is those literals exactly."""
    matches = SIMPLE_BOUND.findall(text)
    uses = len(re.findall(r"\bX_\d+\b", re.sub(r";[^\n]*|\(declare-const X_\d+ Real\)", "", text)))
    if not matches or len(matches) != uses:
        return                                          # e.g. prop_6: bounds inside (or (and ...))
    lower: dict[int, Fraction] = {}
    upper: dict[int, Fraction] = {}
    for op, index, literal in matches:
        side, pick, value = (upper, min, Fraction(literal)) if op == "<=" else (lower, max, Fraction(literal))
        side[int(index)] = pick(side.get(int(index), value), value)
    box = only_case(prop).box
    assert box.lower_exact == tuple(lower[i] for i in range(len(lower)))
    assert box.upper_exact == tuple(upper[i] for i in range(len(upper)))


# ----- benchmark files checked by hand --------------------------------------------------------------

@needs_shared
def test_acasxu_prop6_is_two_boxes_with_four_disjuncts_each():
    prop = read_vnnlib(SHARED / "acasxu/vnnlib/prop_6.vnnlib", 5, 5)
    assert (prop.n_inputs, prop.n_outputs) == (5, 5)
    first, second = prop.cases
    assert first.box.lower_exact == tuple(map(Fraction, ["-0.129289109", "0.11140846", "-0.499999896", "-0.5", "-0.5"]))
    assert first.box.upper_exact == tuple(map(Fraction, ["0.700434925", "0.499999896", "-0.499204121", "0.5", "0.5"]))
    assert second.box.lower_exact == tuple(map(Fraction, ["-0.129289109", "-0.499999896", "-0.499999896", "-0.5", "-0.5"]))
    assert np.allclose(second.box.upper, [0.700434925, -0.11140846, -0.499204121, 0.5, 0.5], rtol=0, atol=1e-16)
    assert second.box.upper_exact[1] == Fraction("-0.11140846")
    for case in prop.cases:                          # (<= Y_j Y_0): Y_j - Y_0 <= 0, j = 1..4
        assert len(case.unsafe) == 4
        for j, constraint in enumerate(case.unsafe, start=1):
            assert_rows(constraint, *rows(({j: 1, 0: -1}, 0)))


@needs_shared
def test_acasxu_prop2_conjunction_of_four_rows():
    box_and_rows = only_case(read_vnnlib(SHARED / "acasxu/vnnlib/prop_2.vnnlib"))
    box = box_and_rows.box
    assert box.lower_exact == exact("0.6", "-0.5", "-0.5", "0.45", "-0.5")
    assert box.upper_exact == exact("0.679857769", "0.5", "0.5", "0.5", "-0.45")
    assert box.upper_exact[0] == Fraction("0.679857769") and box.lower_exact[3] == Fraction("0.45")
    assert box.upper_exact[4] == Fraction(-45, 100)
    (constraint,) = box_and_rows.unsafe              # Y_0 is maximal: Y_j - Y_0 <= 0 for all j
    assert_rows(constraint, *rows(*[({j: 1, 0: -1}, 0) for j in range(1, 5)]))


@needs_shared
def test_acasxu_prop8_disjunction_of_two_row_conjunctions():
    case = only_case(read_vnnlib(SHARED / "acasxu/vnnlib/prop_8.vnnlib"))
    assert case.box.lower_exact == exact("-0.328422877", "-0.499999896", "-0.015915494", "-0.045454545", "0")
    assert case.box.upper_exact == exact("0.679857769", "-0.374999922", "0.015915494", "0.5", "0.5")
    assert case.box.lower_exact[0] == Fraction("-0.328422877")
    assert len(case.unsafe) == 3
    for j, constraint in zip((2, 3, 4), case.unsafe):   # (<= Y_j Y_0) (<= Y_j Y_1)
        assert_rows(constraint, *rows(({j: 1, 0: -1}, 0), ({j: 1, 1: -1}, 0)))


@needs_shared
def test_mnistfc_box_and_nine_disjuncts():
    case = only_case(read_vnnlib(SHARED / "mnistfc/vnnlib/prop_0_0.03.vnnlib", 784, 10))
    assert case.box.lower.shape == (784,)
    assert case.box.lower_exact[0] == 0 and case.box.upper_exact[0] == Fraction("0.029999999329447746")
    assert case.box.upper[0] == 0.029999999329447746
    others = [j for j in range(10) if j != 4]
    assert len(case.unsafe) == len(others)
    for j, constraint in zip(others, case.unsafe):   # (>= Y_j Y_4): Y_4 - Y_j <= 0
        assert_rows(constraint, *rows(({4: 1, j: -1}, 0), n=10))


@needs_shared
def test_smoke_files():
    nano = only_case(read_vnnlib(SHARED / "smoke/vnnlib/test_nano.vnnlib", 1, 1))
    assert nano.box.lower_exact == (-1,) and nano.box.upper_exact == (1,)
    (constraint,) = nano.unsafe                      # (<= Y_0 -1)
    assert_rows(constraint, [[1.0]], [-1.0])
    small = only_case(read_vnnlib(SHARED / "smoke/vnnlib/test_small.vnnlib"))
    assert small.box.lower_exact == (-1,) and small.box.upper_exact == (1,)
    assert_rows(small.unsafe[0], [[-1.0]], [-100.0])    # (>= Y_0 100) inside the same (and ...)


@needs_shared
def test_scientific_notation_is_exact():
    path = SHARED / "oval21/vnnlib/cifar_deep_kw-img7878-eps0.009934640522875817.vnnlib"
    index, literal = next((int(i), v) for op, i, v in SIMPLE_BOUND.findall(path.read_text()) if "e" in v)
    box = only_case(read_vnnlib(path)).box
    assert Fraction(literal) in (box.lower_exact[index], box.upper_exact[index])


@needs_shared
def test_concrete_points_on_acasxu_prop6():
    prop = read_vnnlib(SHARED / "acasxu/vnnlib/prop_6.vnnlib")
    x = np.array([[0.0, 0.3, -0.4995, 0.0, 0.0],      # in the first box
                  [0.0, -0.3, -0.4995, 0.0, 0.0],     # in the second box
                  [0.0, 0.0, -0.4995, 0.0, 0.0],      # between the boxes
                  [0.0, 0.3, -0.4995, 0.0, 0.0]])
    y = np.array([[0.0, 1, 1, 1, -1],                 # Y_4 <= Y_0: unsafe
                  [0.0, 0, 1, 1, 1],                  # Y_1 <= Y_0 (equal): unsafe
                  [0.0, -1, -1, -1, -1],
                  [0.0, 1, 1, 1, 1]])                 # Y_0 is strictly minimal: safe
    assert prop.is_unsafe(x, y).tolist() == [True, True, False, False]
    assert prop.cases[0].box.contains(x).tolist() == [True, False, False, True]


# ----- small inline files ---------------------------------------------------------------------------

def test_strict_rows_and_concrete_points(tmp_path):
    prop = read_vnnlib(write(tmp_path, BOX + "(assert (< Y_0 Y_1))\n(assert (<= Y_0 2))\n"))
    (constraint,) = only_case(prop).unsafe
    assert_rows(constraint, [[1.0, -1.0], [1.0, 0.0]], [0.0, 2.0], [True, False])
    inside, outside = [0.5, 0.5], [0.5, 0.6]
    x = np.array([inside, inside, inside, outside])
    y = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 3.0], [0.0, 1.0]])
    assert prop.is_unsafe(x, y).tolist() == [True, False, True, False]    # Y_0 = Y_1 is not '<'
    assert constraint.holds(y).tolist() == [True, False, True, True]
    assert prop.is_unsafe(np.array(inside), np.array([0.0, 1.0])) == np.True_   # a single point


def test_linear_terms(tmp_path):
    body = BOX + ("(assert (or (<= (+ Y_0 (* 2 Y_1)) (- 3))\n"
                  "            (>= (- Y_0 Y_1) 0.5)\n"
                  "            (= (* Y_0 0.5) (- Y_1 Y_0))\n"
                  "            (< 1 (* Y_1 -2))\n"
                  "            (> Y_0 (+ Y_1 1 2))\n"
                  "            (<= (- Y_0 Y_1 Y_0) (* 2 3 0.5))\n"
                  "            (<= (* 3 Y_0 -1) 1.5e1)))\n")
    case = only_case(read_vnnlib(write(tmp_path, body)))
    expected = [([[1, 2]], [-3], [False]),               # y0 + 2 y1 <= -3
                ([[-1, 1]], [-0.5], [False]),            # y0 - y1 >= 0.5
                ([[1.5, -1], [-1.5, 1]], [0, 0], [False, False]),  # 0.5 y0 = y1 - y0
                ([[0, 2]], [-1], [True]),                # 1 < -2 y1
                ([[-1, 1]], [-3], [True]),               # y0 > y1 + 3
                ([[0, -1]], [3], [False]),               # y0 - y1 - y0 <= 3
                ([[-3, 0]], [15], [False])]              # -3 y0 <= 15
    assert len(case.unsafe) == len(expected)
    for constraint, (A, b, strict) in zip(case.unsafe, expected):
        assert_rows(constraint, A, b, strict)


def test_inexact_coefficients_are_scaled_to_exact_ones(tmp_path):
    """0.1 is no float: the row 0.1 y0 - 0.3 y1 <= 0.3 is kept as y0 - 3 y1 <= 3, exactly. With the
    rounded coefficients, y = (3, 0) would wrongly fail it (float 0.1 * 3 > 0.3)."""
    body = BOX + "(assert (<= (- (* 0.1 Y_0) (* 0.3 Y_1)) 0.3))\n(assert (>= (* 0.5 Y_1) -1))\n"
    (constraint,) = only_case(read_vnnlib(write(tmp_path, body))).unsafe
    assert_rows(constraint, [[1, -3], [0, -0.5]], [3, 1], [False, False])
    assert constraint.holds(np.array([3.0, 0.0])) and not constraint.holds(np.array([3.0 + 1e-12, 0.0]))


def test_input_bounds_from_linear_terms_are_exact(tmp_path):
    body = ("(assert (<= (* 3 X_0) 1))\n(assert (>= (- X_0) -1))\n(assert (>= X_0 -0.1))\n"
            "(assert (>= X_0 -0.2))\n(assert (= X_1 1.25e-1))\n(assert (<= Y_0 Y_1))\n")
    box = only_case(read_vnnlib(write(tmp_path, body))).box
    assert box.lower_exact == (Fraction("-0.1"), Fraction(1, 8))     # repeated bounds intersect
    assert box.upper_exact == (Fraction(1, 3), Fraction(1, 8))
    assert box.upper.tolist() == [float(np.nextafter(1 / 3, 1)), 0.125]    # 1/3 rounded up: the box never shrinks


def test_nested_and_or_to_dnf(tmp_path):
    body = BOX + ("(assert (or (and (<= Y_0 1) (or (<= Y_1 2) (<= Y_1 3))) (<= Y_0 4)))\n"
                  "(assert (and (or (>= Y_0 5) (>= Y_1 6)) (<= Y_0 7)))\n"
                  "(assert (<= Y_1 8))\n")
    case = only_case(read_vnnlib(write(tmp_path, body)))
    got = [list(zip(map(tuple, c.A.tolist()), c.b.tolist())) for c in case.unsafe]
    y0, y1, minus_y0, minus_y1 = (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)
    firsts = [[(y0, 1.0), (y1, 2.0)], [(y0, 1.0), (y1, 3.0)], [(y0, 4.0)]]
    seconds = [[(minus_y0, -5.0), (y0, 7.0)], [(minus_y1, -6.0), (y0, 7.0)]]
    # Rows every disjunct shares (from single-disjunct asserts) come first.
    assert got == [[(y1, 8.0)] + f + s for f in firsts for s in seconds]


def test_disjunction_of_boxes_groups_cases(tmp_path):
    body = ("(assert (or (and (>= X_0 0) (<= X_0 1)) (and (>= X_0 2) (<= X_0 3))))\n"
            "(assert (>= X_1 0))\n(assert (<= X_1 1))\n(assert (or (<= Y_0 0) (<= Y_1 0)))\n")
    prop = read_vnnlib(write(tmp_path, body))
    assert [(c.box.lower_exact[0], c.box.upper_exact[0]) for c in prop.cases] == [(0, 1), (2, 3)]
    for case in prop.cases:
        assert [c.A.tolist() for c in case.unsafe] == [[[1.0, 0.0]], [[0.0, 1.0]]]
    assert prop.is_unsafe(np.array([[0.5, 0.5], [1.5, 0.5], [2.5, 0.5]]),
                          np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])).tolist() == [True, False, False]


def test_identical_boxes_share_a_case_and_no_output_row_means_always_unsafe(tmp_path):
    body = ("(assert (>= X_1 0))\n(assert (<= X_1 1))\n(assert (or\n"
            "  (and (>= X_0 0) (<= X_0 1) (<= Y_0 0))\n"
            "  (and (<= X_0 1.0) (>= X_0 0.0))\n"
            "  (and (>= X_0 0) (<= X_0 1) (>= Y_1 0))))\n")
    prop = read_vnnlib(write(tmp_path, body))
    (case,) = prop.cases
    assert [c.A.shape for c in case.unsafe] == [(1, 2), (0, 2), (1, 2)]
    assert case.unsafe[1].holds(np.array([[5.0, -5.0]])).tolist() == [True]
    assert prop.is_unsafe(np.array([[0.5, 0.5], [1.5, 0.5]]), np.array([[9.0, -9.0]] * 2)).tolist() \
        == [True, False]


def test_counts_from_the_network(tmp_path):
    prop = read_vnnlib(write(tmp_path, BOX + "(assert (<= Y_0 1))\n"), n_inputs=2, n_outputs=2)
    assert (prop.n_inputs, prop.n_outputs) == (2, 2)
    with pytest.raises(VnnlibError, match="declares 2 inputs X_i but the network has 3"):
        read_vnnlib(write(tmp_path, BOX), n_inputs=3)
    with pytest.raises(VnnlibError, match="declares 2 outputs Y_i but the network has 1"):
        read_vnnlib(write(tmp_path, BOX), n_outputs=1)


def test_boilerplate_commands_and_comments(tmp_path):
    body = ("(set-logic QF_LRA) ; a comment with ( parentheses\n" + BOX
            + "(assert (<= Y_0 1)) ; tail\n(check-sat)\n")
    assert only_case(read_vnnlib(write(tmp_path, body))).unsafe[0].b.tolist() == [1.0]


# ----- errors: each names the file and the line of the offending form --------------------------------

@pytest.mark.parametrize("body,message,line", [
    (BOX + "(assert (<= Y_0 1)\n(assert (<= Y_1 1))\n", "never closed", 9),
    (BOX + "(assert\n  (<= Y_0 1)))\n", "')' closes nothing", 10),
    (BOX + "(push 1)\n", "unknown command 'push'", 9),
    (BOX + "(assert (<= Y_2 1))\n", "'Y_2' is used but not declared", 9),
    (BOX + "(assert (or (<= Y_0 1)\n  (<= Z 1)))\n", "unknown symbol 'Z'", 10),
    (BOX + "(assert (<= (* Y_0 Y_1) 1))\n", "non-linear", 9),
    (BOX + "(assert (<= Y_0 (+ 1 (* X_0 Y_1))))\n", "non-linear", 9),
    (BOX + "(assert (<= Y_0 1.2.3))\n", "bad number '1.2.3'", 9),
    (BOX + "(assert (<= Y_0 1e))\n", "bad number '1e'", 9),
    (BOX + "(assert (<= Y_0 0x10))\n", "bad number '0x10'", 9),
    (BOX + "\n(assert (<= X_0 Y_0))\n", "mixing inputs X and outputs Y", 10),
    (BOX + "(assert (<= (+ X_0 X_1) 1))\n", "several inputs X", 9),
    (BOX + "(assert (< X_0 1))\n", "strict bounds on inputs", 9),
    (BOX + "(assert (<= 1 0))\n", "always false", 9),
    (BOX + "(assert (not (<= Y_0 0)))\n", "unsupported connective or comparison 'not'", 9),
    (BOX + "(assert (<= (/ Y_0 2) 0))\n", "unsupported term '/'", 9),
    (BOX + "(assert (<= Y_0 1 2))\n", "'<=' takes exactly two arguments", 9),
    (BOX + "(assert (<= Y_0 1) (<= Y_1 1))\n", "exactly one formula", 9),
    (BOX + "assert\n", "'assert' outside parentheses", 9),
    (BOX + "(declare-const Y_1 Real)\n", "already declared on line 4", 9),
    (BOX + "(declare-const Y_2 Int)\n", "expected (declare-const NAME Real)", 9),
    (BOX + "(declare-const Z Real)\n", "must be named X_i", 9),
    (BOX + "(declare-const X_02 Real)\n", "must be named X_i", 9),
    (BOX + "(declare-const X_3 Real)\n", "X_2 is not declared, but X_3 is", 9),
    (BOX + "(assert (>= X_1 0.75))\n", "the input region is empty: X_1 >= 0.75 and X_1 <= 0.5", 9),
    ("(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (>= X_1 0))\n", "X_1 has no upper bound", 2),
    ("(assert (or (and (>= X_0 0) (<= X_0 1)) (and (>= X_0 2) (<= X_0 3))))\n(assert (<= X_1 1))\n",
     "X_1 has no lower bound", 2),
])
def test_errors_name_file_and_line(tmp_path, body, message, line):
    with pytest.raises(VnnlibError) as caught:
        read_vnnlib(write(tmp_path, body))
    assert message in str(caught.value)
    assert f"prop.vnnlib:{line}:" in str(caught.value) and caught.value.line == line


def test_dnf_size_is_limited(tmp_path):
    disjunction = "(assert (or " + " ".join(f"(<= Y_0 {k})" for k in range(101)) + "))\n"
    assert 101 * 101 > MAX_DNF_TERMS
    with pytest.raises(VnnlibError, match=f"more than {MAX_DNF_TERMS} disjuncts") as caught:
        read_vnnlib(write(tmp_path, BOX + disjunction + disjunction))
    assert caught.value.line == 10


def test_missing_file(tmp_path):
    with pytest.raises(VnnlibError, match="cannot read") as caught:
        read_vnnlib(tmp_path / "absent.vnnlib")
    assert "absent.vnnlib" in str(caught.value)


def test_float_toward_rounds_outward_and_keeps_floats():
    third = Fraction(1, 3)
    assert_outward(np.array([float_toward(third, up=True)]), [third], up=True)
    assert_outward(np.array([float_toward(third, up=False)]), [third], up=False)
    assert float_toward(Fraction(0.25), up=True) == float_toward(Fraction(0.25), up=False) == 0.25


def test_input_box_from_floats_takes_each_float_as_its_exact_bound():
    box = InputBox.from_floats(np.array([0.1, -1.0], dtype=np.float32), [0.3, 2.0])
    assert box.lower.dtype == box.upper.dtype == np.float64
    assert box.lower_exact == (Fraction(float(np.float32(0.1))), Fraction(-1))
    assert box.upper_exact == (Fraction(0.3), Fraction(2))
    assert box.contains(np.array([[0.2, 0.0], [0.2, 2.5]])).tolist() == [True, False]
