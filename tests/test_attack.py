"""Attacks and confirmation: gradients against finite differences, PGD on the smoke nets (its
counterexample confirmed by onnxruntime), exact inward rounding, and the competition's result file."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from onnx import helper

from smtverify import load_onnx
from smtverify.attack import closest, descend_from, fgsm, gradient, jsma, pgd, pgd_linf, random_search
from smtverify.confirm import (Counterexample, confirm, confirm_misclassification, holds_exactly,
                               inward_float32, write_vnncomp_result)
from smtverify.chain import to_chain
from smtverify.steps import MaxPool
from smtverify.vnnlib import InputBox, OutputConstraint, read_vnnlib
from tests.conftest import SHARED, make_model, needs_shared, save


def conv_pool_model(rng: np.random.Generator):
    """Conv -> Relu -> overlapping padded MaxPool -> Gemm -> Tanh -> Gemm -> Sigmoid -> Gemm: every
    kind of step the backward pass handles."""
    weights = {"w": rng.normal(size=(2, 1, 3, 3)), "cb": rng.normal(size=2) * 0.1,
               "g1": rng.normal(size=(18, 6)) * 0.5, "b1": rng.normal(size=6) * 0.1,
               "g2": rng.normal(size=(6, 5)), "b2": rng.normal(size=5) * 0.1,
               "g3": rng.normal(size=(5, 3)), "b3": rng.normal(size=3)}
    nodes = [helper.make_node("Conv", ["x", "w", "cb"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "g1", "b1"], ["h1"]),
             helper.make_node("Tanh", ["h1"], ["t"]),
             helper.make_node("Gemm", ["t", "g2", "b2"], ["h2"]),
             helper.make_node("Sigmoid", ["h2"], ["s"]),
             helper.make_node("Gemm", ["s", "g3", "b3"], ["y"])]
    return make_model(nodes, [1, 1, 5, 5], initializers={k: v.astype(np.float32) for k, v in weights.items()})


@pytest.fixture(scope="module")
def small_net(tmp_path_factory):
    path = save(conv_pool_model(np.random.default_rng(3)), tmp_path_factory.mktemp("attack"))
    network = load_onnx(path)
    return network, to_chain(network)


def test_gradient_matches_finite_differences(small_net):
    _, chain = small_net
    assert any(isinstance(step, MaxPool) for step in chain.steps)
    rng = np.random.default_rng(2)
    x, c = rng.normal(size=(4, chain.n_inputs)), rng.normal(size=(4, chain.n_outputs))
    h = 1e-6
    moves = h * np.eye(chain.n_inputs)
    plus = chain.forward((x[:, None, :] + moves).reshape(-1, chain.n_inputs)).reshape(4, chain.n_inputs, -1)
    minus = chain.forward((x[:, None, :] - moves).reshape(-1, chain.n_inputs)).reshape(4, chain.n_inputs, -1)
    numeric = np.einsum("bio,bo->bi", (plus - minus) / (2 * h), c)
    np.testing.assert_allclose(gradient(chain, x, c), numeric, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gradient(chain, x[:1], c[0]), numeric[:1], rtol=1e-5, atol=1e-7)


def test_classic_attacks_stay_in_their_regions_and_are_deterministic(small_net):
    network, chain = small_net
    x0 = np.random.default_rng(3).uniform(0, 1, chain.n_inputs)
    label = int(chain.forward(x0[None])[0].argmax())
    one_step = fgsm(chain, x0, label, 0.1, 0.0, 1.0)
    assert np.all(np.abs(one_step - x0) <= 0.1 + 1e-12) and np.all((one_step >= 0) & (one_step <= 1))
    runs = [pgd_linf(chain, x0, label, 0.3, 0.0, 1.0, np.random.default_rng(4), restarts=4) for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert np.all(np.abs(runs[0] - x0) <= 0.3 + 1e-12)
    changed = jsma(chain, x0, label, max_pixels=6)
    assert np.count_nonzero(changed != x0) <= 6 and set(changed[changed != x0]) <= {1.0}
    for x in (one_step, runs[0], changed):
        found = confirm_misclassification(network, x, label, 0.0, 1.0)
        assert found is None or (found.new_class != label and found.output[found.new_class] > found.output[label])


def test_pgd_linf_finds_what_a_large_ball_must_contain(small_net):
    """A ball as large as the input domain, where random sampling shows another class (rarely)."""
    network, chain = small_net
    x0 = np.full(chain.n_inputs, 0.5)
    label = int(chain.forward(x0[None])[0].argmax())
    sampled = chain.forward(np.random.default_rng(0).uniform(0, 1, (20000, chain.n_inputs))).argmax(axis=1)
    assert 0 < np.count_nonzero(sampled != label) < 10
    x = pgd_linf(chain, x0, label, 0.5, 0.0, 1.0, np.random.default_rng(0), steps=100, restarts=16, loss="margin")
    found = confirm_misclassification(network, x, label, 0.0, 1.0)
    assert found is not None and found.executor == "onnxruntime" and found.input.shape == network.input_shape


# ----- inward rounding --------------------------------------------------------------------------------
def exact_box(lower: list[str], upper: list[str]) -> InputBox:
    lo, hi = [Fraction(v) for v in lower], [Fraction(v) for v in upper]
    return InputBox(np.array([float(v) for v in lo]), np.array([float(v) for v in hi]), tuple(lo), tuple(hi))


def test_inward_float32_rounds_into_the_exact_box():
    box = exact_box(["0.45", "-0.3", "0.5", "1e-50"], ["0.6", "-0.1", "0.5", "1"])
    assert Fraction(float(np.float32(0.45))) < Fraction("0.45")          # plain rounding leaves the box
    x = inward_float32(np.array([0.45, -0.1, 0.5, 0.0]), box)
    assert x.dtype == np.float32
    assert x[0] == np.nextafter(np.float32(0.45), np.float32(1)) and x[2] == np.float32(0.5)
    for value, low, high in zip(x.tolist(), box.lower_exact, box.upper_exact):
        assert low <= Fraction(value) <= high
    assert x[3] > 0                                                      # the smallest subnormal at least
    batch = inward_float32(np.array([[0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 1.0, 2.0]]), box)
    assert batch.shape == (2, 4) and all(box.contains(batch))


def test_inward_float32_without_a_float32_in_the_interval():
    assert inward_float32(np.array([0.1]), exact_box(["0.1"], ["0.1"])) is None             # no float32 is 1/10
    assert inward_float32(np.array([0.1]), exact_box(["0.1"], ["0.10000000000000001"])) is None
    assert inward_float32(np.array([0.5]), exact_box(["0.5"], ["0.5"])) == np.float32(0.5)


def test_output_condition_is_checked_exactly():
    """2^30 + 2^-30 - 2^30 is 0 in float64 but 2^-30 exactly: the row sum <= 0 does not hold."""
    y = np.array([2.0 ** 30, 2.0 ** -30, -(2.0 ** 30)], dtype=np.float32)
    row = OutputConstraint(np.ones((1, 3)), np.zeros(1), np.zeros(1, bool))
    assert y.astype(np.float64) @ row.A[0] == 0 and not holds_exactly(row, y)
    assert holds_exactly(OutputConstraint(np.ones((1, 3)), np.array([2.0 ** -30]), np.zeros(1, bool)), y)
    assert not holds_exactly(OutputConstraint(np.ones((1, 3)), np.array([2.0 ** -30]), np.ones(1, bool)), y)


# ----- the smoke networks ------------------------------------------------------------------------------
def smoke(name: str):
    network = load_onnx(SHARED / "smoke" / "onnx" / f"{name}.onnx")
    prop = read_vnnlib(SHARED / "smoke" / "vnnlib" / "test_prop.vnnlib", network.n_inputs, network.n_outputs)
    return network, to_chain(network), prop


@needs_shared
def test_pgd_finds_and_onnxruntime_confirms_the_sat_counterexample():
    network, chain, prop = smoke("test_sat")
    candidates = pgd(chain, prop.cases[0], np.random.default_rng(0), restarts=8, steps=30)
    assert len(candidates)
    found = confirm(network, prop, candidates[0])
    assert isinstance(found, Counterexample) and (found.case, found.constraint) == (0, 0)
    assert found.input.dtype == np.float32 and found.input.shape == network.input_shape
    assert prop.is_unsafe(found.input.reshape(1, -1), found.output[None])[0]
    np.testing.assert_allclose(found.numpy_output, found.output, rtol=1e-5, atol=1e-6)


@needs_shared
def test_nothing_confirms_on_the_unsat_net():
    network, chain, prop = smoke("test_unsat")
    case = prop.cases[0]
    rng = np.random.default_rng(0)
    assert len(random_search(chain, case, 2000, rng)) == 0 and len(pgd(chain, case, rng, restarts=8, steps=30)) == 0
    points = rng.uniform(case.box.lower, case.box.upper, (5, network.n_inputs))
    assert all(confirm(network, prop, x) is None for x in points)


@needs_shared
def test_descent_from_the_nearest_points_finds_a_sliver_pgd_misses():
    """ACAS Xu 5_3/prop_2 is sat, but its unsafe region is a sliver: PGD's random restarts miss it,
    local descent from the nearest of many uniform points reaches it."""
    network = load_onnx(SHARED / "acasxu/onnx/ACASXU_run2a_5_3_batch_2000.onnx")
    prop = read_vnnlib(SHARED / "acasxu/vnnlib/prop_2.vnnlib", network.n_inputs, network.n_outputs)
    chain, case, rng = to_chain(network), prop.cases[0], np.random.default_rng(0)
    assert len(pgd(chain, case, rng, restarts=256, steps=60)) == 0
    seeds = closest(chain, case, 300_000, rng, keep=512)
    assert seeds.shape == (512, 5) and np.all((seeds >= case.box.lower) & (seeds <= case.box.upper))
    found = [confirm(network, prop, x) for x in descend_from(chain, case, seeds)[:4]]
    assert any(isinstance(f, Counterexample) for f in found)


# ----- the result file ---------------------------------------------------------------------------------
def parse_result(text: str) -> tuple[str, list[float], list[float]]:
    """The competition's reading: the verdict line, then '(' ... ')' of '(X_i v)' / '(Y_j v)' parts."""
    verdict, _, rest = text.strip().partition("\n")
    values: dict[str, list[float]] = {"X": [], "Y": []}
    body = " ".join(rest.split())
    if body:
        assert body[0] == "(" and body[-1] == ")"
        for part in filter(None, (p.strip() for p in body[1:-1].split(")"))):
            name, number = part[1:].split(" ")
            assert int(name[2:]) == len(values[name[0]])
            values[name[0]].append(float(number))
    return verdict, values["X"], values["Y"]


def test_result_file_round_trips_the_float32_values(tmp_path):
    x = np.array([[0.1, -2.5e-8, 3.0]], dtype=np.float32)
    y = np.array([1 / 3, -0.0], dtype=np.float32)
    path = tmp_path / "result.txt"
    write_vnncomp_result(path, "sat", Counterexample(x, y, y, case=0, constraint=0))
    verdict, xs, ys = parse_result(path.read_text())
    assert verdict == "sat"
    np.testing.assert_array_equal(np.array(xs, dtype=np.float32), x.reshape(-1))
    np.testing.assert_array_equal(np.array(ys, dtype=np.float32), y)
    write_vnncomp_result(path, "unsat")
    assert path.read_text() == "unsat\n"
    with pytest.raises(ValueError):
        write_vnncomp_result(path, "SAFE")
