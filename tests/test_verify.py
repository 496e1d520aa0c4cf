"""The complete decision procedure: known verdicts come back, every counterexample is real, and on
small random networks the verdict agrees with dense sampling and an independent exact Z3 encoding."""
from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
import pytest
import z3
from onnx import helper

from smtverify import load_onnx, resources
from smtverify.bench import read_instances
from smtverify.cli import main
from smtverify.reference import OnnxRuntimeExecutor
from smtverify.verdict import Verdict
from smtverify.lp import LpRelaxation
from smtverify.verify import Settings, Statistics, Verifier, robustness_property
from smtverify.verify.context import Job
from smtverify.verify.input_branching import candidates, halves, split_dimension
from smtverify.verify.leaves import box_leaf
from smtverify.verify.objective import UnsafeRows
from smtverify.vnnlib import read_vnnlib
from tests.conftest import SHARED, make_model, needs_shared, save
from tests.test_slopes import row_property

# Quick instances with official verdicts (sat ones confirmed by a concrete counterexample).
ACAS_SAMPLE = [("1_1", "1", "unsat"), ("2_4", "3", "unsat"), ("3_6", "4", "unsat"),
               ("2_2", "2", "sat"), ("4_3", "2", "sat")]


def decide(onnx_path, vnnlib_path, timeout=60.0, settings=None):
    network = load_onnx(onnx_path)
    prop = read_vnnlib(vnnlib_path, network.n_inputs, network.n_outputs)
    return network, prop, Verifier(network, Settings(timeout=timeout).replaced(settings or {})).verify(prop)


def assert_real_counterexample(network, prop, result):
    """Inside the region exactly, and unsafe by onnxruntime's own output."""
    x = result.counterexample.input.reshape(1, -1).astype(np.float32)
    y = OnnxRuntimeExecutor(network).logits(x.reshape((1,) + network.input_shape))
    assert prop.is_unsafe(x.astype(np.float64), y.astype(np.float64))[0]


@needs_shared
@pytest.mark.parametrize("instance", read_instances(SHARED / "smoke/instances.csv") if SHARED.is_dir() else [],
                         ids=lambda i: f"{i.onnx.name}-{i.vnnlib.name}")
def test_smoke_set_is_decided_correctly(instance):
    network, prop, result = decide(instance.onnx, instance.vnnlib)
    assert result.verdict.vnncomp == instance.expected
    if result.verdict is Verdict.UNSAFE:
        assert_real_counterexample(network, prop, result)
    else:
        assert result.min_margin is not None and result.min_margin > 0


@needs_shared
@pytest.mark.parametrize("net,prop_id,expected", ACAS_SAMPLE)
def test_acasxu_sample(net, prop_id, expected):
    network, prop, result = decide(SHARED / f"acasxu/onnx/ACASXU_run2a_{net}_batch_2000.onnx",
                                   SHARED / f"acasxu/vnnlib/prop_{prop_id}.vnnlib")
    assert result.verdict.vnncomp == expected
    if expected == "sat":
        assert_real_counterexample(network, prop, result)
    elif "proven_share" in result.stats:          # the closed boxes' volumes add up to the whole box
        assert result.stats["proven_share"] == pytest.approx(1.0)


@needs_shared
def test_a_run_stopped_early_says_how_much_of_the_box_input_splitting_proved():
    """Stopped by a budget of leaves (UNKNOWN), or of seconds on a loaded machine (TIMEOUT)."""
    network, prop, result = decide(SHARED / "acasxu/onnx/ACASXU_run2a_3_3_batch_2000.onnx",
                                   SHARED / "acasxu/vnnlib/prop_2.vnnlib", timeout=10.0, settings={"leaves.max_leaves": 200})
    assert result.verdict in (Verdict.UNKNOWN, Verdict.TIMEOUT)
    assert 0.0 < result.stats["proven_share"] < 1.0
    assert f"{result.stats['proven_share']:.1%} of the input box of case 1 of 1" in result.reason


@needs_shared
def test_splitting_goes_on_after_lp_tightening_with_the_boxes_left_open():
    """The first splitting stops at once (after its first round); after LP tightening the boxes it
    left open are split on, none lost and none counted twice: their volumes add up to the box."""
    network, prop, result = decide(SHARED / "acasxu/onnx/ACASXU_run2a_1_2_batch_2000.onnx",
                                   SHARED / "acasxu/vnnlib/prop_3.vnnlib", timeout=20.0, settings={"input_split.lp_after": 1e-3})
    assert result.verdict is Verdict.SAFE and result.stats["lp"]
    assert result.stats["proven_share"] == pytest.approx(1.0)


@needs_shared
def test_a_leaf_the_lp_refutes_never_reaches_z3():
    """An open box of ACAS Xu 3_3/prop_2 with 10 unstable ReLUs that back-substitution leaves open:
    the LP bound closes it, so Z3 (much slower on such leaves) is not called; no point sampled in
    it is unsafe (onnxruntime)."""
    network = load_onnx(SHARED / "acasxu/onnx/ACASXU_run2a_3_3_batch_2000.onnx")
    prop = read_vnnlib(SHARED / "acasxu/vnnlib/prop_2.vnnlib")
    case = prop.cases[0]
    lo = np.array([0.6, 0.01953125, 0.21875, 0.45624999999999993, -0.5])
    hi = np.array([0.6798577690000001, 0.0234375, 0.234375, 0.46249999999999997, -0.475])
    verifier = Verifier(network)
    bounds = verifier.tools.bounds.forward(lo[None], hi[None])
    rows = UnsafeRows.of(case)
    assert rows.margins(verifier.tools.bounds.lower_bound_rows(bounds, rows.A))[0] <= 0
    job = Job(verifier.tools, case, verifier.settings, Statistics())
    relaxation = LpRelaxation(verifier.chain, case.box.lower, case.box.upper)
    assert box_leaf(job, bounds, 0, lo, hi, time.perf_counter() + 60, relaxation).proven
    assert job.stats.z3_calls == 0 and job.stats.lp_solves >= 1
    x = np.random.default_rng(0).uniform(lo, hi, (2000, 5)).astype(np.float32)
    y = OnnxRuntimeExecutor(network).logits(x.reshape((-1,) + network.input_shape))
    assert not np.any(prop.is_unsafe(x.astype(np.float64), y.astype(np.float64)))


def test_split_dimension_leaves_a_cut_that_gains_nothing_for_the_widest_dimension():

    parent = np.array([-0.033, -0.5])
    margins = np.array([[[-0.033 + 1e-8, -0.01], [-0.0331, -0.02], [-0.04, 0.1]],      # box 0: no cut gains
                        [[-0.4, -0.3], [-0.1, 0.2], [-0.45, -0.2]]])                  # box 1: dim 1 gains
    widths = np.array([[2 ** -27, 2 ** -7, 2 ** -2], [1.0, 1.0, 1.0]])
    assert list(split_dimension(margins, parent, widths)) == [2, 1]
    lopsided = np.array([[2 ** -20, 2 ** -20, 1.0], [1.0, 1.0, 1.0]])   # box 0: dim 2 never cut yet
    gaining = np.array([[[-0.01, -0.01], [-0.02, -0.02], [-0.03, -0.02]], margins[1]])
    assert list(split_dimension(gaining, parent, lopsided)) == [2, 1]


def test_candidates_rank_dimensions_by_gain_and_keep_the_widest_in_reach():

    widths = np.array([[1.0, 0.5, 0.25], [1.0, 1.0, 2 ** -10]])
    scores = [np.array([0.1, 0.3, 0.2]), np.array([0.0, 0.1, 0.9])]
    assert candidates(widths, scores, 1).tolist() == [[False, True, False], [True, False, False]]  # 1: lopsided
    assert candidates(widths, scores, 2).tolist() == [[True, True, False], [True, False, True]]    # + the widest
    assert candidates(widths, [scores[0], None], 1).tolist() == [[False, True, False], [True] * 3]  # no score: all
    assert candidates(widths, scores, 0).tolist() == [[True] * 3] * 2


def test_halves_split_each_box_along_its_own_dimension():

    lo, hi = np.zeros((2, 3)), np.array([[2.0, 4.0, 8.0], [1.0, 1.0, 1.0]])
    child_lo, child_hi = halves(lo, hi, np.array([2, 0]))
    assert child_hi[0, 0].tolist() == [2.0, 4.0, 4.0] and child_lo[0, 1].tolist() == [0.0, 0.0, 4.0]
    assert child_hi[1, 0].tolist() == [0.5, 1.0, 1.0] and child_lo[1, 1].tolist() == [0.5, 0.0, 0.0]


def test_split_dimension_picks_among_candidates_only():

    margins = np.array([[[0.5, 0.4], [-0.1, -0.2], [-np.inf, -np.inf]]])
    candidate = np.array([[False, True, True]])
    widths = np.array([[1.0, 0.5, 0.5]])
    assert split_dimension(margins, np.array([-1.0]), widths, candidate).tolist() == [1]


def test_certify_bundled_mlp_safe_and_unsafe():
    network = load_onnx(resources.model_path("digits_mlp"))
    data = resources.test_images("digits_mlp")
    x, label = data.images[0], int(data.labels[0])
    safe = Verifier(network, Settings(timeout=30)).verify(robustness_property(network, x, label, 0.005))
    assert safe.verdict is Verdict.SAFE
    unsafe = Verifier(network, Settings(timeout=30)).verify(robustness_property(network, x, label, 0.3))
    assert unsafe.verdict is Verdict.UNSAFE
    adversarial = unsafe.counterexample.input.reshape((1,) + network.input_shape)
    assert OnnxRuntimeExecutor(network).classify(adversarial)[0] != label
    assert np.abs(adversarial.reshape(-1) - x.reshape(-1)).max() <= 0.3
    assert adversarial.min() >= 0 and adversarial.max() <= 1


@pytest.mark.parametrize("timeout", [4.0, 10.0, 30.0])
def test_more_time_never_turns_a_proof_into_unknown(timeout):
    """The bundled MLP's test image 21 at eps 0.05: two domains, each proven by splitting in a
    fraction of a second. Their Z3 leaves once took the full 20 s limit each, so 4 s proved the
    case and 10-20 s left it UNKNOWN; a domain's first Z3 call is now short."""
    network = load_onnx(resources.model_path("digits_mlp"))
    data = resources.test_images("digits_mlp")
    prop = robustness_property(network, data.images[21], int(data.labels[21]), 0.05)
    assert Verifier(network, Settings(timeout=timeout)).verify(prop).verdict is Verdict.SAFE


def test_certify_cli(tmp_path, capsys):
    data = resources.test_images("digits_mlp")
    np.save(tmp_path / "x.npy", data.images[0])
    model = str(resources.model_path("digits_mlp"))
    assert main(["certify", model, "--input", str(tmp_path / "x.npy"), "--label", str(data.labels[0]),
                 "--eps", "0.3", "--out", str(tmp_path / "adv.npy")]) == 0
    assert capsys.readouterr().out.startswith("UNSAFE")
    assert (tmp_path / "adv.npy").is_file()


# ----- random small networks against independent methods -----------------------------------------
def random_network(tmp_path, seed: int):
    """A 2-6-6-2 ReLU network with weights on the 2^-4 grid."""
    rng = np.random.default_rng(seed)
    w = [np.round(rng.normal(size=s) * 16) / 16 for s in [(2, 6), (6, 6), (6, 2)]]
    b = [np.round(rng.normal(size=s) * 16) / 16 for s in [6, 6, 2]]
    nodes, previous = [], "x"
    for i in range(3):
        nodes.append(helper.make_node("MatMul", [previous, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"] if i < 2 else ["y"]))
        if i < 2:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [f"r{i}"]))
            previous = f"r{i}"
    inits = {f"w{i}": w[i].astype(np.float32) for i in range(3)} | {f"b{i}": b[i].astype(np.float32) for i in range(3)}
    return save(make_model(nodes, ["N", 2], initializers=inits), tmp_path, f"net{seed}.onnx"), w, b


def independent_z3(w, b, lower, upper, threshold) -> bool:
    """Exact: is there x in the box with y0 - y1 <= threshold? (If-encoded ReLUs, no bounds.)"""
    x = [z3.Real(f"x{i}") for i in range(2)]
    solver = z3.Solver()
    solver.add(*[z3.And(v >= Fraction(float(lo)), v <= Fraction(float(hi))) for v, lo, hi in zip(x, lower, upper)])
    h = x
    for i in range(3):
        z = [sum(Fraction(float(w[i][k, j])) * h[k] for k in range(len(h))) + Fraction(float(b[i][j]))
             for j in range(w[i].shape[1])]
        h = [z3.If(v >= 0, v, 0) for v in z] if i < 2 else z
    solver.add(h[0] - h[1] <= Fraction(float(threshold)))
    return solver.check() == z3.sat


# ReLU splitting forced (it is otherwise for inputs of more than 12 dimensions), down to domains
# with no unstable ReLU left, or with Z3 deciding the small ones; or given up at once for the
# root's neuron bounds refined (refine_after 0), and begun again within those.
RELU_SPLITTING = {"input_split.max_dims": 0, "leaves.relus": 0, "bounds.root_slope_steps": 0}


@pytest.mark.parametrize("splitting", [{}, RELU_SPLITTING, RELU_SPLITTING | {"leaves.relus": 4},
                                       RELU_SPLITTING | {"relu_split.refine_after": 0.0}],
                         ids=["input", "relu", "relu-z3", "relu-refined"])
@pytest.mark.parametrize("seed", range(12))
def test_random_networks_agree_with_sampling_and_exact_z3(tmp_path, seed, splitting):
    path, w, b = random_network(tmp_path, seed)
    network = load_onnx(path)
    rng = np.random.default_rng(100 + seed)
    lower = rng.uniform(-1, 0, 2)
    upper = lower + rng.uniform(0.2, 1.0, 2)
    samples = rng.uniform(lower, upper, (20000, 2))
    values = network.logits(samples, np.float64) @ np.array([1.0, -1.0])
    threshold = float(np.round(np.quantile(values, 0.002 if seed % 2 else 0.0) - (0.05 if seed % 2 == 0 else 0), 4))
    vnnlib = tmp_path / "p.vnnlib"
    vnnlib.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
                      "(declare-const Y_1 Real)\n" + "".join(
                          f"(assert (>= X_{i} {float(lower[i])!r}))\n(assert (<= X_{i} {float(upper[i])!r}))\n" for i in range(2))
                      + f"(assert (<= (- Y_0 Y_1) {threshold!r}))\n")
    network, prop, result = decide(path, vnnlib, timeout=30, settings=splitting)
    exact_sat = independent_z3(w, b, prop.cases[0].box.lower, prop.cases[0].box.upper, threshold)
    assert result.verdict in (Verdict.SAFE, Verdict.UNSAFE)
    assert (result.verdict is Verdict.UNSAFE) == exact_sat
    if np.any(values <= threshold):
        assert result.verdict is Verdict.UNSAFE
    if result.verdict is Verdict.UNSAFE:
        assert_real_counterexample(network, prop, result)


def test_relu_splitting_splits_domains_and_closes_them(tmp_path):
    """Instances just beyond the sampled minimum (unsat by the exact encoding): some need many
    domains, and every one closes, by its bounds or (with no unstable ReLU left) by Z3; so it
    does after the splitting is given up at once for the root's bounds refined."""
    domains, refinements = [], 0
    for seed in range(12):
        path, w, b = random_network(tmp_path, seed)
        network = load_onnx(path)
        lower, upper = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
        row = network.logits(np.random.default_rng(seed).uniform(lower, upper, (20000, 2)), np.float64) @ [1.0, -1.0]
        threshold = float(row.min()) - 0.1
        if independent_z3(w, b, lower, upper, threshold):
            continue
        prop = row_property(network, lower, upper, [[1.0, -1.0]], threshold)
        result = Verifier(network, Settings(timeout=30).replaced(RELU_SPLITTING)).verify(prop)
        assert result.verdict is Verdict.SAFE and result.stats["z3_calls"] == result.stats["z3_unsat"]
        domains.append(result.stats["boxes_bounded"])
        refined = Verifier(network, Settings(timeout=30).replaced(RELU_SPLITTING | {"relu_split.refine_after": 0.0})).verify(prop)
        assert refined.verdict is Verdict.SAFE
        refinements += "refine_seconds" in refined.stats
    assert len(domains) >= 8 and max(domains) > 8
    assert refinements >= len(domains) - 2


def test_relu_splitting_stopped_early_says_what_it_left_open(tmp_path):
    """A leaf budget stops the splitting: the verdict is UNKNOWN, never SAFE, and the result counts
    the open domains and the worst of their (inherited, so non-positive) margin bounds."""
    stopped = 0
    for seed in range(12):
        path, w, b = random_network(tmp_path, seed)
        network = load_onnx(path)
        lower, upper = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
        row = network.logits(np.random.default_rng(seed).uniform(lower, upper, (20000, 2)), np.float64) @ [1.0, -1.0]
        prop = row_property(network, lower, upper, [[1.0, -1.0]], float(row.min()) - 0.1)
        result = Verifier(network, Settings(timeout=30).replaced(RELU_SPLITTING | {"leaves.max_leaves": 0})).verify(prop)
        if result.stats["boxes_bounded"] <= 2 or result.stats.get("open_domains") is None:
            continue                      # closed at the root, or by its first batch
        assert result.verdict is Verdict.UNKNOWN
        assert result.stats["open_domains"] >= 1 and result.stats["worst_open_margin"] <= 0
        assert f"left {result.stats['open_domains']} open" in result.reason
        stopped += 1
    assert stopped >= 3


def test_z3_leaves_of_relu_splitting_respect_the_phase_decisions(tmp_path):
    """Z3 at domains with no unstable ReLU left: a decided ReLU looks stable to the encoding, so
    without its phase as a constraint Z3 returned spurious models (and the verdict unknown)."""
    for seed in (1, 4, 9):
        path, w, b = random_network(tmp_path, seed)
        network = load_onnx(path)
        lower, upper = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
        row = network.logits(np.random.default_rng(seed).uniform(lower, upper, (20000, 2)), np.float64) @ [1.0, -1.0]
        threshold = float(row.min()) - 0.05
        assert not independent_z3(w, b, lower, upper, threshold)
        settings = RELU_SPLITTING | {"relu_split.slope_steps": 0}
        result = Verifier(network, Settings(timeout=30).replaced(settings)).verify(row_property(network, lower, upper, [[1.0, -1.0]], threshold))
        assert result.verdict is Verdict.SAFE and result.stats["unconfirmed_candidates"] == 0


def test_final_softmax_is_decided_only_for_output_comparisons(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Softmax", ["h"], ["y"])]
    path = save(make_model(nodes, ["N", 2], initializers={"w": np.array([[1, -1], [0.5, 2]], np.float32)}), tmp_path)
    header = "".join(f"(declare-const {v} Real)\n" for v in ["X_0", "X_1", "Y_0", "Y_1"])
    box = "(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= X_1 1))\n"
    (tmp_path / "cmp.vnnlib").write_text(header + box + "(assert (<= Y_0 Y_1))\n")
    (tmp_path / "level.vnnlib").write_text(header + box + "(assert (<= Y_0 0.1))\n")
    assert decide(path, tmp_path / "cmp.vnnlib")[2].verdict in (Verdict.SAFE, Verdict.UNSAFE)
    assert decide(path, tmp_path / "level.vnnlib")[2].verdict is Verdict.UNKNOWN


@needs_shared
def test_vnnlib_and_bench_commands(tmp_path, capsys):
    model, prop = SHARED / "smoke/onnx/test_sat.onnx", SHARED / "smoke/vnnlib/test_prop.vnnlib"
    assert main(["vnnlib", str(model), str(prop), "--out", str(tmp_path / "result.txt")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "sat"
    lines = (tmp_path / "result.txt").read_text().split("\n")
    assert lines[0] == "sat" and any(line.startswith("(X_0 ") for line in lines)
    assert main(["bench", str(SHARED / "smoke/instances.csv"), "--out", str(tmp_path / "run"), "--json"]) == 0
    record = __import__("json").loads(capsys.readouterr().out)
    assert record["solved"] == 5 and record["wrong"] == 0
    assert len((tmp_path / "run" / "results.csv").read_text().strip().splitlines()) == 6
