"""The VNN-LIB reader: every benchmark file parses; values checked by hand; each error named."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from smtverify.errors import VnnlibError
from smtverify.vnnlib import read_vnnlib
from tests.conftest import SHARED, needs_shared

HEADER = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
BOX = "(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_1 -1))\n(assert (<= X_1 0.5))\n"


def write(tmp_path, body: str, header: str = HEADER):
    path = tmp_path / "p.vnnlib"
    path.write_text(header + body)
    return path


@needs_shared
def test_every_benchmark_file_parses():
    files = sorted(SHARED.glob("*/vnnlib/*.vnnlib"))
    assert len(files) > 200
    for path in files:
        prop = read_vnnlib(path)
        assert prop.cases, path
        for case in prop.cases:
            assert case.box.lower.shape == (prop.n_inputs,) and np.all(case.box.lower <= case.box.upper), path


@needs_shared
def test_acasxu_prop6_is_two_boxes():
    prop = read_vnnlib(SHARED / "acasxu/vnnlib/prop_6.vnnlib", 5, 5)
    assert len(prop.cases) == 2
    first, second = prop.cases
    np.testing.assert_array_equal(first.box.lower, [-0.129289109, 0.11140846, -0.499999896, -0.5, -0.5])
    np.testing.assert_array_equal(first.box.upper, [0.700434925, 0.499999896, -0.499204121, 0.5, 0.5])
    np.testing.assert_array_equal(second.box.lower[:2], [-0.129289109, -0.499999896])
    np.testing.assert_array_equal(second.box.upper[:2], [0.700434925, -0.11140846])
    for case in prop.cases:   # unsafe if Y_j <= Y_0 for some j in 1..4: rows Y_j - Y_0 <= 0
        assert len(case.unsafe) == 4
        for j, constraint in enumerate(case.unsafe, start=1):
            expected = np.zeros((1, 5))
            expected[0, j], expected[0, 0] = 1, -1
            np.testing.assert_array_equal(constraint.A, expected)
            np.testing.assert_array_equal(constraint.b, [0])


@needs_shared
def test_acasxu_prop2_and_prop8():
    prop2 = read_vnnlib(SHARED / "acasxu/vnnlib/prop_2.vnnlib")
    (case,) = prop2.cases
    assert case.box.lower[0] == 0.6 and case.box.upper[0] == 0.679857769 and case.box.lower[3] == 0.45
    assert case.box.lower_exact[3] == Fraction("0.45") and case.box.upper_exact[0] == Fraction("0.679857769")
    prop8 = read_vnnlib(SHARED / "acasxu/vnnlib/prop_8.vnnlib")
    (case,) = prop8.cases
    np.testing.assert_array_equal(case.box.upper[1], -0.374999922)
    assert len(case.unsafe) == 3
    np.testing.assert_array_equal(case.unsafe[0].A, [[-1, 0, 1, 0, 0], [0, -1, 1, 0, 0]])   # Y_2 <= Y_0, Y_2 <= Y_1


@needs_shared
def test_mnistfc_box_and_rows():
    prop = read_vnnlib(SHARED / "mnistfc/vnnlib/prop_0_0.03.vnnlib", 784, 10)
    (case,) = prop.cases
    assert case.box.lower_exact[0] == 0 and case.box.upper_exact[0] == Fraction("0.029999999329447746")
    assert len(case.unsafe) == 9
    others = [j for j in range(10) if j != 4]
    for j, constraint in zip(others, case.unsafe):   # (>= Y_j Y_4): Y_4 - Y_j <= 0
        expected = np.zeros(10)
        expected[4], expected[j] = 1, -1
        np.testing.assert_array_equal(constraint.A[0], expected)


@needs_shared
def test_smoke_nano():
    prop = read_vnnlib(SHARED / "smoke/vnnlib/test_nano.vnnlib")
    (case,) = prop.cases
    assert (case.box.lower[0], case.box.upper[0]) == (-1, 1)
    np.testing.assert_array_equal(case.unsafe[0].A, [[1]])
    np.testing.assert_array_equal(case.unsafe[0].b, [-1])


def test_concrete_checks_and_strict_rows(tmp_path):
    prop = read_vnnlib(write(tmp_path, BOX + "(assert (< Y_0 Y_1))\n"))
    x_in, x_out = np.array([0.5, 0.0]), np.array([2.0, 0.0])
    assert prop.is_unsafe(np.stack([x_in, x_in, x_out]), np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 1.0]])).tolist() \
        == [True, False, False]          # equality does not meet a strict '<'


def test_linear_terms_and_nested_dnf(tmp_path):
    body = BOX + "(assert (or (and (<= (+ Y_0 (* 2 Y_1)) (- 3)) (>= Y_1 0)) (= (* Y_0 0.5) (- Y_1 Y_0))))\n"
    (case,) = read_vnnlib(write(tmp_path, body)).cases
    first, second = case.unsafe
    np.testing.assert_array_equal(first.A, [[1, 2], [0, -1]])
    np.testing.assert_array_equal(first.b, [-3, 0])
    np.testing.assert_array_equal(second.A, [[1.5, -1], [-1.5, 1]])      # 0.5 y0 - (y1 - y0) = 0
    np.testing.assert_array_equal(second.b, [0, 0])


def test_disjunction_of_boxes_groups_cases(tmp_path):
    body = ("(assert (or (and (>= X_0 0) (<= X_0 1)) (and (>= X_0 2) (<= X_0 3))))\n"
            "(assert (>= X_1 0))\n(assert (<= X_1 1))\n(assert (or (<= Y_0 0) (<= Y_1 0)))\n")
    prop = read_vnnlib(write(tmp_path, body))
    assert [(c.box.lower[0], c.box.upper[0], len(c.unsafe)) for c in prop.cases] == [(0, 1, 2), (2, 3, 2)]


@pytest.mark.parametrize("body,message,line", [
    (BOX + "(assert (<= Y_0 1)", "unbalanced '('", 9),
    (BOX + "(assert (<= Y_0 1)))\n", "unbalanced ')'", 9),
    (BOX + "(push 1)\n", "unknown or malformed command 'push'", 9),
    (BOX + "(assert (<= Y_2 1))\n", "'Y_2' is used but never declared", 9),
    (BOX + "(assert (<= (* Y_0 Y_1) 1))\n", "non-linear", 9),
    (BOX + "(assert (<= Y_0 1.2.3))\n", "neither a number", 9),
    (BOX + "\n(assert (<= X_0 Y_0))\n", "mixing inputs and outputs", 10),
])
def test_errors_name_file_and_line(tmp_path, body, message, line):
    with pytest.raises(VnnlibError) as caught:
        read_vnnlib(write(tmp_path, body))
    assert message in str(caught.value) and f"p.vnnlib:{line}" in str(caught.value)


@pytest.mark.parametrize("header,body,message", [
    (HEADER + "(declare-const Z Real)\n", BOX, "must be named X_i"),
    (HEADER, "(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (<= X_1 1))\n", "X_1 needs both"),
    (HEADER, "(assert (>= X_0 2))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= X_1 1))\n", "empty range"),
])
def test_declaration_and_box_errors(tmp_path, header, body, message):
    with pytest.raises(VnnlibError, match=message):
        read_vnnlib(write(tmp_path, body, header))


def test_counts_must_match_the_network(tmp_path):
    with pytest.raises(VnnlibError, match="declares 2 X variables; the network has 3"):
        read_vnnlib(write(tmp_path, BOX), n_inputs=3)


def test_missing_file(tmp_path):
    with pytest.raises(VnnlibError, match="cannot read"):
        read_vnnlib(tmp_path / "absent.vnnlib")
