"""VNN-LIB 2.0 through the official parser: hand-written 2.0 versions of shared properties read into
the same Property as their 1.0 originals and get the same verdicts; what a Property cannot hold is
refused with a VnnlibError naming the file and the construct; the version comes from the file."""
from __future__ import annotations

import importlib.util
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from smtverify.errors import VnnlibError
from smtverify.onnx_import import load_onnx
from smtverify.verdict import Verdict
from smtverify.verify import Settings, Verifier
from smtverify.vnnlib import Property, read_vnnlib
from tests.conftest import SHARED, needs_shared

DATA = Path(__file__).resolve().parent / "data" / "vnnlib2"
needs_parser = pytest.mark.skipif(importlib.util.find_spec("vnnlib") is None,
                                  reason='the official parser is not installed: pip install "smtverify[vnnlib2]"')

HEADER = "(vnnlib-version <2.0>)\n(declare-network net (declare-input X real [2]) (declare-output Y real [2]))\n"
BOX = "(assert (>= X[0] 0.0))\n(assert (<= X[0] 1.0))\n(assert (>= X[1] -1.0))\n(assert (<= X[1] 0.5))\n"  # lines 3-6
HEADER_1 = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
BOX_1 = "(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n(assert (>= X_1 -1.0))\n(assert (<= X_1 0.5))\n"


def write(tmp_path: Path, text: str, name: str = "prop.vnnlib") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_same_property(two: Property, one: Property) -> None:
    """Same sizes, and case by case the same boxes (exact and float) and the same constraints."""
    assert (two.n_inputs, two.n_outputs, len(two.cases)) == (one.n_inputs, one.n_outputs, len(one.cases))
    for case_two, case_one in zip(two.cases, one.cases):
        assert case_two.box.lower_exact == case_one.box.lower_exact
        assert case_two.box.upper_exact == case_one.box.upper_exact
        np.testing.assert_array_equal(case_two.box.lower, case_one.box.lower)
        np.testing.assert_array_equal(case_two.box.upper, case_one.box.upper)
        assert len(case_two.unsafe) == len(case_one.unsafe)
        for rows_two, rows_one in zip(case_two.unsafe, case_one.unsafe):
            np.testing.assert_array_equal(rows_two.A, rows_one.A)
            np.testing.assert_array_equal(rows_two.b, rows_one.b)
            np.testing.assert_array_equal(rows_two.strict, rows_one.strict)
            assert rows_two.b_exact == rows_one.b_exact


# ----- the shared properties, in 2.0 ------------------------------------------------------------

SHARED_PAIRS = [("acasxu_prop_1", "acasxu/vnnlib/prop_1", 5, 5),        # one box, one row
                ("acasxu_prop_6", "acasxu/vnnlib/prop_6", 5, 5),        # two boxes, four disjuncts
                ("acasxu_prop_8", "acasxu/vnnlib/prop_8", 5, 5),        # disjunction of row pairs
                ("mnistfc_prop_0_0.03", "mnistfc/vnnlib/prop_0_0.03", 784, 10)]   # a [1,28,28] image


@needs_parser
@needs_shared
@pytest.mark.parametrize("two, one, n_inputs, n_outputs", SHARED_PAIRS, ids=[p[0] for p in SHARED_PAIRS])
def test_a_2_0_version_reads_into_the_same_property_as_its_1_0_original(two, one, n_inputs, n_outputs):
    assert_same_property(read_vnnlib(DATA / f"{two}.vnnlib", n_inputs, n_outputs),
                         read_vnnlib(SHARED / f"{one}.vnnlib", n_inputs, n_outputs))


@needs_parser
@needs_shared
@pytest.mark.parametrize("net, prop, verdict", [("1_1", "prop_1", Verdict.SAFE), ("2_9", "prop_8", Verdict.UNSAFE)])
def test_a_2_0_version_gets_the_verdict_of_its_1_0_original(net, prop, verdict):
    network = load_onnx(SHARED / f"acasxu/onnx/ACASXU_run2a_{net}_batch_2000.onnx")
    original = read_vnnlib(SHARED / f"acasxu/vnnlib/{prop}.vnnlib", 5, 5)
    results = [Verifier(network, Settings(timeout=60.0)).verify(p)
               for p in (original, read_vnnlib(DATA / f"acasxu_{prop}.vnnlib", 5, 5))]
    assert [r.verdict for r in results] == [verdict, verdict]
    if verdict is Verdict.UNSAFE:
        found = results[1].counterexample
        assert original.is_unsafe(found.input.reshape(-1), found.output)


# ----- exactness and the constructs 1.0 has too -------------------------------------------------

@needs_parser
def test_literals_are_exact_as_in_1_0(tmp_path):
    """Bounds kept exactly as written and rounded outward; a row scaled to exact float coefficients."""
    body = ("(assert (>= X[0] 0.1))\n(assert (<= X[0] 00.30))\n(assert (>= X[1] -0.0))\n"
            "(assert (<= X[1] 0.1000000000000000055511151231257827021181583404541015625))\n"
            "(assert (<= (* 0.1 Y[0]) (- 0.3 (* Y[1] -2.5))))\n")
    body_1 = ("(assert (>= X_0 0.1))\n(assert (<= X_0 00.30))\n(assert (>= X_1 -0.0))\n"
              "(assert (<= X_1 0.1000000000000000055511151231257827021181583404541015625))\n"
              "(assert (<= (* 0.1 Y_0) (- 0.3 (* Y_1 -2.5))))\n")
    two = read_vnnlib(write(tmp_path, HEADER + body, "two.vnnlib"), 2, 2)
    assert_same_property(two, read_vnnlib(write(tmp_path, HEADER_1 + body_1, "one.vnnlib"), 2, 2))
    box = two.cases[0].box
    assert box.lower_exact == (Fraction("0.1"), Fraction(0))
    assert box.lower[0] < Fraction("0.1") and box.upper[0] > Fraction("0.3")    # rounded outward
    assert two.cases[0].unsafe[0].b_exact == (Fraction(3),)                      # 0.1 y0 - 2.5 y1 <= 0.3, times 10


@needs_parser
def test_not_equal_on_outputs_is_the_disjunction_of_the_two_strict_rows(tmp_path):
    two = read_vnnlib(write(tmp_path, HEADER + BOX + "(assert (!= Y[0] Y[1]))\n", "two.vnnlib"))
    one = read_vnnlib(write(tmp_path, HEADER_1 + BOX_1 + "(assert (or (< Y_0 Y_1) (> Y_0 Y_1)))\n", "one.vnnlib"))
    assert_same_property(two, one)


@needs_parser
def test_a_scalar_output_is_referenced_without_indices(tmp_path):
    text = ("(vnnlib-version <2.0>)\n(declare-network net (declare-input X real [1]) (declare-output Y real []))\n"
            "(assert (>= X[0] 0.0))\n(assert (<= X[0] 1.0))\n(assert (>= Y 0.5))\n")
    prop = read_vnnlib(write(tmp_path, text), 1, 1)
    np.testing.assert_array_equal(prop.cases[0].unsafe[0].A, [[-1.0]])


@needs_parser
def test_inputs_are_flattened_row_major(tmp_path):
    """X[i,j] of a [2,3] input is the network's input 3i + j, as ONNX lays tensors out."""
    bounds = "".join(f"(assert (>= X[{i},{j}] {3 * i + j}.0))\n(assert (<= X[{i},{j}] {3 * i + j}.5))\n"
                     for i in range(2) for j in range(3))
    text = ("(vnnlib-version <2.0>)\n(declare-network net (declare-input X real [2,3]) (declare-output Y real [1]))\n"
            + bounds + "(assert (>= Y[0] 0.0))\n")
    box = read_vnnlib(write(tmp_path, text), 6, 1).cases[0].box
    np.testing.assert_array_equal(box.lower, np.arange(6.0))


# ----- version detection -------------------------------------------------------------------------

@needs_parser
def test_the_version_command_may_follow_comments_and_blank_lines(tmp_path):
    prop = read_vnnlib(write(tmp_path, "; a 2.0 file\n\n  ; (vnnlib-version <9.9>) in a comment is a comment\n"
                             + HEADER + BOX + "(assert (<= Y[0] 0.5))\n"), 2, 2)
    assert prop.n_inputs == 2


def test_a_file_without_the_version_command_stays_on_the_1_0_reader(tmp_path, monkeypatch):
    """Without the 2.0 header (one mentioned only in a comment) the strict reader reads the file, even
    with the official parser absent; a long run of ';' is skipped in linear time."""
    monkeypatch.setitem(sys.modules, "vnnlib", None)
    text = ";" * 100_000 + "\n; (vnnlib-version <2.0>)\n" + HEADER_1 + BOX_1 + "(assert (<= Y_0 0.5))\n"
    assert read_vnnlib(write(tmp_path, text), 2, 2).n_outputs == 2


def test_a_2_0_file_without_the_official_parser_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vnnlib", None)
    path = write(tmp_path, HEADER + BOX + "(assert (<= Y[0] 0.5))\n")
    with pytest.raises(VnnlibError, match=r'pip install "smtverify\[vnnlib2\]"') as error:
        read_vnnlib(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


# ----- what a Property cannot hold is refused, named ---------------------------------------------

def _network(*declarations: str) -> str:
    return "(vnnlib-version <2.0>)\n(declare-network net " + " ".join(declarations) + ")\n"


REFUSED = {
    "several networks": ("(vnnlib-version <2.0>)\n(declare-network f (declare-input X real [2]) (declare-output Y real [2]))\n"
                         "(declare-network g (declare-input A real [2]) (declare-output B real [2]))\n" + BOX,
                         r"declares 2 networks \(f, g\)"),
    "hidden nodes": (_network("(declare-input X real [2])", '(declare-hidden H real [2] "h")',
                              "(declare-output Y real [2])") + BOX, r"hidden nodes \(H\)"),
    "several inputs": (_network("(declare-input X real [2])", "(declare-input Z real [1])",
                                "(declare-output Y real [2])") + BOX, r"2 input tensors \(X, Z\)"),
    "floating-point type": (_network("(declare-input X float32 [2])", "(declare-output Y float32 [2])") + BOX,
                            r"input 'X' has element type 'float32': only 'real'"),
    "non-linear output constraint": (HEADER + BOX + "(assert (<= (* Y[0] Y[1]) 0.0))\n", r":7: non-linear term"),
    "inputs not a box": (HEADER + BOX + "(assert (<= (+ X[0] X[1]) 1.0))\n", r":7: a constraint relating several inputs"),
    "inputs and outputs mixed": (HEADER + BOX + "(assert (<= X[0] Y[1]))\n", r":7: a constraint mixing inputs X and outputs Y"),
    "strict input bound": (HEADER + BOX + "(assert (!= X[0] 0.5))\n", r":7: strict bounds on inputs"),
    "unbounded input": (HEADER + "(assert (<= Y[0] 0.5))\n", r"input X_0 has no lower bound"),
    "syntax error": (HEADER + BOX + "(assert (<= Y[0] 1e-3))\n", r"parser refuses the file: Parse error: syntax error at line 7"),
    "other major version": (HEADER.replace("<2.0>", "<3.0>") + BOX, r":1: the VNN-LIB 2.0 parser refuses the file: .*<3.0>"),
    "index out of range": (HEADER + BOX + "(assert (<= Y[2] 0.5))\n", r":7: .*Index 2 is out of bounds"),
    "deep nesting": (HEADER + BOX + "(assert\n" + "(and " * 200 + "(<= Y[0] 0.5)" + ")" * 200 + ")\n",
                     r":8: forms nested more than 100 deep"),
}


@needs_parser
@pytest.mark.parametrize("name", REFUSED)
def test_what_a_property_cannot_hold_is_refused_naming_file_and_construct(tmp_path, name):
    text, message = REFUSED[name]
    path = write(tmp_path, text)
    with pytest.raises(VnnlibError, match=message) as error:
        read_vnnlib(path, 2, 2)
    assert str(error.value).startswith(str(path))


@needs_parser
def test_the_network_sizes_are_checked_as_in_1_0(tmp_path):
    with pytest.raises(VnnlibError, match="declares 2 inputs X_i but the network has 3"):
        read_vnnlib(write(tmp_path, HEADER + BOX + "(assert (<= Y[0] 0.5))\n"), 3, 2)
