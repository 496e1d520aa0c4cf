"""Hidden-layer search on conv layers (issue 22 items 4 and 6): the prefix program over the moved
pixels holds the network's own runs, eta_k contains sampled images of eta_0, every example is
confirmed by onnxruntime inside eta_0, every spurious verdict carries a proof that sampled inputs
respect, and the certificates hold however poor the duals are."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from smtverify import load_onnx, resources
from smtverify.bounds import BoundPropagator
from smtverify.chain import chain_of
from smtverify.features import select_features
from smtverify.hidden_search import HiddenSettings
from smtverify.lifting import cell_boxes
from smtverify.manipulations import PixelManipulation
from smtverify.mixed_program import MixedProgram, certified_minimum, lp_minimum, prove_above
from smtverify.prefix_program import prefix_program
from smtverify.reference import OnnxRuntimeExecutor
from smtverify.search import SearchSettings, dlv_search
from smtverify.verdict import Verdict

SPAN, STEPS, PIXELS = 0.5, 2, 8
VERIVITAL = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "verivital" / "onnx" / "Convnet_maxpool.onnx"
MISCLASSIFIED = 255     # a test image the CNN gets wrong: its own neighbourhood holds examples


@pytest.fixture(scope="module")
def cnn():
    network = load_onnx(resources.model_path("mnist_cnn"))
    return network, resources.test_images("mnist_cnn")


def _search(network, x, label, layer, hidden_features=2, pixels=PIXELS, heuristic="activation"):
    settings = SearchSettings(span=SPAN, steps=STEPS, features=pixels, heuristic="gradient", collect_all=True,
                              layer=layer, hidden=HiddenSettings(layer, features=hidden_features, steps=STEPS,
                                                                 refinement_timeout=0.3, candidates=8,
                                                                 candidate_timeout=1.0, heuristic=heuristic))
    return dlv_search(network, x, label, settings)


def _region(network, x, label, pixels=PIXELS):
    """eta_0, independently: the moved pixels between their clipped grid extremes."""
    dims = select_features(network, x, pixels, "gradient", label)
    flat = x.reshape(-1).astype(np.float64)
    lo, hi = flat.copy(), flat.copy()
    lo[dims] = np.clip(flat[dims] - STEPS * SPAN, 0, 1).astype(np.float32)
    hi[dims] = np.clip(flat[dims] + STEPS * SPAN, 0, 1).astype(np.float32)
    return lo, hi


def _hidden_values(network, layer, inputs):
    chain = chain_of(network)
    return chain.prefix(chain.boundaries[layer]).forward(inputs)


def _samples(lo, hi, n, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(lo, hi, (n, lo.size))


def test_examples_confirmed_inside_eta0_and_eta_k_sound(cnn):
    network, data = cnn
    x, label = data.images[MISCLASSIFIED], int(data.labels[MISCLASSIFIED])
    report = _search(network, x, label, "relu3")
    hidden = report.hidden[0]
    assert report.verdict == Verdict.UNSAFE and hidden.confirmed == len(report.examples) >= 1
    assert hidden.checked == hidden.confirmed + hidden.spurious + hidden.unconfirmed + hidden.unknown
    assert 0 < hidden.columns < 4000 and hidden.tightened > 0          # the reduced program, LP-tightened eta_k
    lo, hi = _region(network, x, label)
    reference = OnnxRuntimeExecutor(network)
    for found in report.examples:
        flat = found.example.input.reshape(-1).astype(np.float64)
        assert np.all(flat >= lo) and np.all(flat <= hi) and found.layer == "relu3"
        assert int(reference.classify(found.example.input)[0]) == found.example.new_class != label
    values = _hidden_values(network, "relu3", _samples(lo, hi, 2000, 0))[:, hidden.dims]
    assert np.all(values >= np.array(hidden.lower)) and np.all(values <= np.array(hidden.upper))
    summary = report.summary()["hidden"][0]
    assert summary["program_columns"] == hidden.columns and set(summary["phase_seconds"]) >= {"region", "grid"}


def test_spurious_verdicts_carry_proofs_that_samples_respect(cnn):
    network, data = cnn
    x, label = data.images[148], int(data.labels[148])       # the CNN's smallest margin among its test images
    report = _search(network, x, label, "relu3")
    hidden = report.hidden[0]
    assert hidden.spurious >= 3 and not report.examples and sum(hidden.proofs.values()) == hidden.spurious
    lo, hi = _region(network, x, label)
    values = _hidden_values(network, "relu3", _samples(lo, hi, 2000, 1))[:, hidden.dims]
    for record in hidden.records:
        assert record["status"] in ("confirmed", "unconfirmed", "spurious", "unknown")
        if record["status"] == "spurious":
            assert record["proof"] in ("bounds", "lp", "branch and bound")
            # a certified least violation: no input of eta_0 comes closer to the point than it
            violation = np.abs(values - np.array(record["point"])).sum(axis=1)
            assert record["proof"] != "lp" or violation.min() >= record["bound"] > 0


def test_gradient_heuristic_picks_movable_dimensions(cnn):
    network, data = cnn
    x, label = data.images[0], int(data.labels[0])
    hidden = _search(network, x, label, "relu3", hidden_features=3, heuristic="gradient").hidden[0]
    lo, hi = _region(network, x, label)
    values = _hidden_values(network, "relu3", _samples(lo, hi, 200, 6))[:, hidden.dims]
    assert len(hidden.dims) == 3 and np.all(values.max(axis=0) > values.min(axis=0))   # each moves over eta_0


def test_prefix_program_holds_the_networks_runs(cnn):
    network, data = cnn
    x, label = data.images[150], int(data.labels[150])
    chain = chain_of(network)
    dims = select_features(network, x, PIXELS, "gradient", label)
    (lo,), (hi,) = cell_boxes(PixelManipulation(x, dims, SPAN, STEPS), 1)
    prefix = prefix_program(chain, BoundPropagator(chain).forward(lo[None], hi[None]), chain.boundaries["relu2"])
    program = prefix.program
    assert program.n_cols < 2000 and set(prefix.inputs) == set(dims)
    for point in _samples(lo, hi, 3, 2):
        # the inputs and phases of the run fixed: the program must still hold a point, the run's values
        phases = prefix.phases_at(point)
        lower = np.where(program.integral, phases, program.col_lower)
        upper = np.where(program.integral, phases, program.col_upper)
        lower[prefix.input_columns] = upper[prefix.input_columns] = point[prefix.inputs]
        fixed = MixedProgram(program.A, program.row_lower, program.row_upper, lower, upper, program.integral)
        answer = lp_minimum(fixed, np.zeros(program.n_cols))
        assert answer.point is not None
        dependent = prefix.columns >= 0
        run = _hidden_values(network, "relu2", point[None])[0]
        assert np.allclose(answer.point[prefix.columns[dependent]], run[dependent], atol=1e-6)


def test_certificates_hold_for_any_duals():
    rng = np.random.default_rng(3)
    A = sparse.csr_matrix(rng.normal(size=(6, 4)))
    program = MixedProgram(A, np.full(6, -1.0), np.full(6, 1.0), np.full(4, -2.0), np.full(4, 2.0), np.zeros(4, bool))
    c = rng.normal(size=4)
    best = lp_minimum(program, c)
    assert best.bound <= best.value and best.value - best.bound < 1e-9
    for _ in range(20):                                   # poor duals only make the bound loose, never wrong
        assert certified_minimum(program, c, rng.normal(size=6)) <= best.value
    empty = MixedProgram(sparse.csr_matrix([[1.0], [1.0]]), np.array([1.0, -np.inf]), np.array([np.inf, 0.0]),
                         np.array([-5.0]), np.array([5.0]), np.zeros(1, bool))
    assert lp_minimum(empty, np.zeros(1)).bound == np.inf            # x >= 1 and x <= 0: certified empty
    # 2 d = 1 with d in {0, 1}: the LP relaxation holds d = 1/2, branch and bound proves it empty
    half = MixedProgram(sparse.csr_matrix([[2.0]]), np.ones(1), np.ones(1), np.zeros(1), np.ones(1), np.ones(1, bool))
    assert lp_minimum(half, np.zeros(1)).bound <= 0
    assert prove_above(half, np.zeros(1), 0.0, np.inf)[0] == "proved"


@pytest.mark.skipif(not VERIVITAL.is_file(), reason="../shared/benchmarks/verivital is absent")
def test_verivital_conv_layer():
    network = load_onnx(VERIVITAL)
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 1, network.input_shape).astype(np.float32)
    label = int(OnnxRuntimeExecutor(network).classify(x)[0])
    report = _search(network, x, label, "7")
    hidden = report.hidden[0]
    assert hidden.checked == hidden.confirmed + hidden.spurious + hidden.unconfirmed + hidden.unknown
    lo, hi = _region(network, x, label)
    values = _hidden_values(network, "7", _samples(lo, hi, 500, 5))[:, hidden.dims]
    assert np.all(values >= np.array(hidden.lower)) and np.all(values <= np.array(hidden.upper))
    for found in report.examples:
        flat = found.example.input.reshape(-1).astype(np.float64)
        assert np.all(flat >= lo) and np.all(flat <= hi) and found.example.new_class != label
