"""Hidden-layer search on the bundled MLP: candidates confirmed by onnxruntime inside the input region
or counted spurious, the region sound, the refinement check against sampled pairs, the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from smtverify import SmtVerifyError, load_onnx, resources
from smtverify.cli import main
from smtverify.features import select_features
from smtverify.hidden_search import HiddenSettings
from smtverify.chain import chain_of
from smtverify.reference import OnnxRuntimeExecutor
from smtverify.search import SearchSettings, dlv_search
from smtverify.verdict import Verdict

MLP = "digits_mlp"
SPAN, STEPS, FEATURES = 0.5, 2, 16


@pytest.fixture(scope="module")
def mlp():
    network = load_onnx(resources.model_path(MLP))
    return network, resources.test_images(MLP).images


def _search(network, x, hidden: HiddenSettings, steps: int = STEPS):
    settings = SearchSettings(span=SPAN, steps=steps, features=FEATURES, collect_all=True, layer=hidden.layer,
                              hidden=hidden)
    return dlv_search(network, x, None, settings)


def _region(network, x, steps: int = STEPS):
    """eta_0, independently: the chosen input dims between their clipped grid extremes."""
    label = int(OnnxRuntimeExecutor(network).classify(x)[0])
    dims = select_features(network, x, FEATURES, "activation", label)
    flat = x.reshape(-1).astype(np.float64)
    lo, hi = flat.copy(), flat.copy()
    lo[dims] = np.clip(flat[dims] - steps * SPAN, 0, 1).astype(np.float32)
    hi[dims] = np.clip(flat[dims] + steps * SPAN, 0, 1).astype(np.float32)
    return label, dims, lo, hi


def test_candidates_confirmed_inside_the_region(mlp):
    network, images = mlp
    x = images[11]
    report = _search(network, x, HiddenSettings("relu1", features=2, steps=STEPS, refinement_timeout=1))
    label, _, lo, hi = _region(network, x)
    hidden = report.hidden[0]
    assert report.verdict == Verdict.UNSAFE and hidden.confirmed == len(report.examples) >= 1
    assert hidden.checked == hidden.confirmed + hidden.spurious + hidden.unconfirmed + hidden.unknown
    reference = OnnxRuntimeExecutor(network)
    for found in report.examples:
        flat = found.example.input.reshape(-1).astype(np.float64)
        assert np.all(flat >= lo) and np.all(flat <= hi) and found.layer == "relu1"
        assert int(reference.classify(found.example.input)[0]) == found.example.new_class != label
        assert found.dims == hidden.dims and len(found.example.c) == 2
    # eta_k contains the layer's values on sampled inputs of eta_0 (condition 1)
    rng = np.random.default_rng(0)
    samples = rng.uniform(lo, hi, (2000, lo.size))
    values = chain_of(network).prefix(chain_of(network).boundaries["relu1"]).forward(samples)[:, hidden.dims]
    assert np.all(values >= np.array(hidden.lower) - 1e-9) and np.all(values <= np.array(hidden.upper) + 1e-9)
    summary = report.summary()
    assert summary["layer"] == "relu1" and summary["hidden_candidates"] == hidden.candidates
    assert summary["hidden"][0]["refinement"] in ("holds", "fails", "unknown")


def test_corner_candidates_are_spurious_never_examples(mlp):
    network, images = mlp
    report = _search(network, images[0], HiddenSettings("relu1", features=4, steps=1, refinement_timeout=1), steps=1)
    hidden = report.hidden[0]
    assert hidden.candidates == hidden.checked == hidden.spurious > 0 and not report.examples
    assert report.verdict == Verdict.SAFE_ON_GRID and "nothing is claimed about the inputs" in report.guarantee
    again = _search(network, images[0], HiddenSettings("relu1", features=4, steps=1, refinement_timeout=1), steps=1)
    first, second = report.hidden[0].summary(), again.hidden[0].summary()
    for clocked in ("seconds", "phase_seconds", "refinement"):     # refinement's answer may hit its time limit
        first.pop(clocked), second.pop(clocked)
    assert first == second                                                        # determinism


def _largest_step_change(network, x, hidden, steps):
    """Sampled pairs x, x + span e_q in eta_0: the largest change of a chosen hidden dim over its span."""
    _, dims, lo, hi = _region(network, x, steps)
    chain = chain_of(network)
    prefix = chain.prefix(chain.boundaries[hidden.layer])
    rng = np.random.default_rng(1)
    worst = 0.0
    for q in dims:
        if hi[q] - lo[q] < SPAN:
            continue
        a = rng.uniform(lo, hi, (500, lo.size))
        a[:, q] = rng.uniform(lo[q], hi[q] - SPAN, 500)
        b = a.copy()
        b[:, q] += SPAN
        change = np.abs(prefix.forward(b) - prefix.forward(a))[:, hidden.dims] / np.maximum(hidden.span, 1e-300)
        worst = max(worst, float(change.max()))
    return worst


def test_refinement_check_agrees_with_sampled_steps(mlp):
    network, images = mlp
    x = images[3]
    coarse = _search(network, x, HiddenSettings("relu1", features=2, steps=STEPS)).hidden[0]
    assert coarse.refinement == "holds" and _largest_step_change(network, x, coarse, STEPS) <= 1 + 1e-9
    fine = _search(network, x, HiddenSettings("relu1", features=2, steps=20)).hidden[0]
    assert fine.refinement == "fails" and _largest_step_change(network, x, fine, STEPS) > 1


def test_not_a_layer_boundary(mlp):
    network, images = mlp
    with pytest.raises(SmtVerifyError, match="use one of fc1, relu1, fc2, relu2"):
        _search(network, images[0], HiddenSettings("flatten"))


def test_cli_layer_json(mlp, tmp_path, capsys):
    network, images = mlp
    np.save(tmp_path / "x.npy", images[11])
    label = int(OnnxRuntimeExecutor(network).classify(images[11])[0])
    assert main(["search", network.path, "--input", str(tmp_path / "x.npy"), "--label", str(label), "--features",
                 str(FEATURES), "--span", str(SPAN), "--steps", str(STEPS), "--layer", "relu1", "--hidden-features",
                 "2", "--json", "--out", str(tmp_path / "out")]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["verdict"] == "UNSAFE" and record["layer"] == "relu1" and record["hidden_candidates"] >= 1
    example = record["examples"][0]
    assert example["layer"] == "relu1" and np.load(example["input_file"])["new_class"] != label
    assert record["hidden"][0]["refinement"] in ("holds", "fails", "unknown")
