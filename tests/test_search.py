"""DLV search: checked against independent enumerations (plain loops, onnxruntime), the CLI, export."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from smtverify import SmtVerifyError, load_onnx, resources
from smtverify.cli import main
from smtverify.export import ExampleWriter
from smtverify.features import activation_ranking, gradient_ranking, rank_features, select_features
from smtverify.reference import OnnxRuntimeExecutor
from smtverify.search import SearchSettings, dlv_search, minimal_search
from smtverify.verdict import Verdict
from tests.test_grid import DIMS, IMAGE, SPAN, STEPS, independent_grid, misclassified, moved_values

MNIST = str(resources.model_path("mnist_cnn"))


@pytest.fixture(scope="module")
def digits():
    network = load_onnx(resources.model_path("digits_cnn"))
    images = resources.test_images("digits_cnn")
    x = images.images[IMAGE]
    return network, x, int(OnnxRuntimeExecutor(network).classify(x)[0])


@pytest.fixture(scope="module")
def mnist_npy(tmp_path_factory):
    path = tmp_path_factory.mktemp("input") / "x.npy"
    np.save(path, resources.test_images("mnist_cnn").images[0][None])     # with a leading batch axis of 1
    return str(path)


def test_search_equals_independent_enumeration(digits):
    network, x, label = digits
    wrong = misclassified(network, x, DIMS, independent_grid(x, DIMS, SPAN, STEPS), label)
    report = dlv_search(network, x, label, SearchSettings(span=SPAN, steps=STEPS, collect_all=True), dims=DIMS)
    assert report.verdict == (Verdict.UNSAFE if wrong else Verdict.SAFE_ON_GRID) and wrong
    assert report.grid_points == report.points_evaluated == 80 and report.rejected == 0
    assert {moved_values(f.example, DIMS) for f in report.examples} == wrong
    reference = OnnxRuntimeExecutor(network)
    for f in report.examples:
        assert int(reference.classify(f.example.input)[0]) == f.example.new_class != label
        assert set(f.example.changed_dims) <= set(DIMS)
    safe = dlv_search(network, x, label, SearchSettings(span=0.01, steps=2), dims=DIMS)
    assert safe.verdict == Verdict.SAFE_ON_GRID and safe.points_evaluated == 125 and not safe.examples
    assert [g.safe for g in safe.grids] == [True]


def test_rounds_examples_lie_on_the_grid_of_all_moved_features(digits):
    network, x, label = digits
    settings = SearchSettings(span=0.1, steps=1, features=2, heuristic="gradient", rounds=6, paths=2)
    report = dlv_search(network, x, label, settings)
    assert report.verdict == Verdict.UNSAFE and len(report.rounds) > 1
    assert all(g.safe for g in report.grids if g.round < len(report.rounds))    # earlier rounds were safe
    assert max(g.path for g in report.grids) == 1                               # multi-path: two points kept
    flat = x.reshape(-1).astype(np.float64)
    for f in report.examples:
        dims, c = np.array(f.dims), f.example.c
        assert len(dims) == len(c) == 2 * f.round and len(set(f.dims)) == len(f.dims) and np.abs(c).max() <= 1
        expected = flat.copy()
        expected[dims] = np.clip(flat[dims] + c * 0.1, 0, 1).astype(np.float32)
        np.testing.assert_array_equal(f.example.input.reshape(-1), expected.astype(np.float32))
        assert OnnxRuntimeExecutor(network).classify(f.example.input)[0] != label
        moved = f.example.input.reshape(-1) - flat
        assert f.example.l0 == np.count_nonzero(moved) and f.example.l2 == pytest.approx(np.linalg.norm(moved))


def test_budget_gives_unknown(digits):
    network, x, label = digits
    report = dlv_search(network, x, label, SearchSettings(span=SPAN, steps=STEPS, max_points=10), dims=DIMS)
    assert report.verdict == Verdict.UNKNOWN and report.points_evaluated == 10 and "10 of 80" in report.reason


def test_minimal_search_is_the_minimum(digits):
    network, x, label = digits
    spans = [0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5]
    report = minimal_search(network, x, DIMS, spans, steps=2, label=label)
    flat = x.reshape(-1)
    pixels = {}
    for span in spans:
        wrong = misclassified(network, x, DIMS, independent_grid(x, DIMS, span, 2), label)
        if wrong:
            pixels[span] = min(sum(v != flat[p] for v, p in zip(point, DIMS)) for point in wrong)
    assert pixels, "the ladder must hold an example for the test to mean something"
    assert report.min_span == min(pixels)
    assert report.min_pixels == min(pixels.values())
    assert report.min_pixels_span == min(s for s, n in pixels.items() if n == report.min_pixels)
    assert all(f.example.new_class != label for f in report.examples)


def test_features_deterministic_and_as_defined(digits):
    network, x, label = digits
    flat = x.reshape(-1).astype(np.float64)
    ranking = activation_ranking(network, x)
    deviation = np.abs(flat - flat.mean())
    assert sorted(ranking) == list(range(64)) and np.all(np.diff(deviation[ranking]) <= 0)
    hidden = activation_ranking(network, x, layer="conv1")
    conv = network.run(x, np.float64)["conv1"].reshape(-1)
    assert np.all(np.diff(np.abs(conv - conv.mean())[hidden]) <= 0)
    # the gradient's top feature moves the margin most (central differences on the numpy executor)
    grad = gradient_ranking(network, x, label)
    logits = network.logits(x, np.float64)[0]
    runner_up = int(np.argsort(logits)[-2])

    def margin(v):
        y = network.logits(v.reshape(x.shape), np.float64)[0]
        return y[label] - y[runner_up]
    h = 1e-6
    fd = np.abs([margin(flat + h * e) - margin(flat - h * e) for e in np.eye(64)]) / (2 * h)
    assert fd[grad[0]] == pytest.approx(fd.max(), rel=1e-3)
    for heuristic in ("activation", "gradient"):
        np.testing.assert_array_equal(rank_features(network, x, heuristic, label),
                                      rank_features(network, x, heuristic, label))
    assert not set(select_features(network, x, 5, "gradient", label, exclude=grad[:3])) & set(grad[:3])
    with pytest.raises(SmtVerifyError, match="no layer 'nope'"):
        activation_ranking(network, x, layer="nope")


def test_cli_search_json_deterministic_and_files_readable(tmp_path, mnist_npy, capsys):
    args = ["search", MNIST, "--input", mnist_npy, "--label", "0", "--features", "6", "--heuristic", "gradient",
            "--span", "0.3", "--steps", "2", "--rounds", "4", "--json"]
    records = []
    for run in ("a", "b"):
        assert main(args + ["--out", str(tmp_path / run)]) == 0
        records.append(json.loads(capsys.readouterr().out))
    first = records[0]
    assert first["verdict"] == "UNSAFE" and first["points_evaluated"] <= first["grid_points"]
    for key in ("verdict", "grid_points", "points_evaluated", "seconds", "examples"):
        assert key in first
    example = first["examples"][0]
    for key in ("input_file", "original_class", "new_class", "changed_dims", "l0", "l2", "linf"):
        assert key in example
    for record in records:                               # the same result, apart from times and folders
        for key in ("seconds", "points_per_second", "evaluation_points_per_second", "out"):
            record.pop(key)
        for part in record["grids"]:
            part.pop("seconds"), part.pop("search_seconds")
        for e in record["examples"]:
            for key in ("input_file", "png_file"):
                e[key] = e[key].replace(str(tmp_path / "b"), str(tmp_path / "a"))
    assert records[0] == records[1]
    saved = np.load(example["input_file"])
    x = np.load(mnist_npy)[0]
    assert saved["input"].shape == x.shape and int(saved["new_class"]) == example["new_class"] != 0
    assert saved["changed_dims"].tolist() == example["changed_dims"] == np.flatnonzero(saved["input"] != x).tolist()
    assert int(saved["l0"]) == example["l0"]
    retrain = np.load(tmp_path / "a" / "retrain.npz")
    assert retrain["inputs"].shape == (1,) + x.shape and retrain["labels"].tolist() == [0]
    assert Image.open(example["input_file"].replace(".npz", ".png")).size == (28, 28)


def test_cli_search_pixels_brightness_and_budget(tmp_path, mnist_npy, capsys):
    base = ["search", MNIST, "--input", mnist_npy, "--label", "0", "--json", "--out", str(tmp_path / "run"), "--force"]
    assert main(base + ["--pixels", "300,301,302", "--span", "0.05", "--steps", "2"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["verdict"] == "SAFE_ON_GRID" and record["grid_points"] == record["points_evaluated"]
    assert record["grids"][0]["dims"] == [300, 301, 302]
    assert main(base + ["--family", "brightness", "--span", "0.01", "--steps", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["grid_points"] == 5
    assert main(base + ["--features", "8", "--span", "0.3", "--steps", "3", "--budget-points", "100"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["verdict"] == "UNKNOWN" and record["points_evaluated"] == 100


@pytest.mark.parametrize("extra, field", [
    (["--pixels", "1,784"], "--pixels"), (["--pixels", "1,a"], "--pixels"), (["--label", "10"], "--label"),
    (["--layer", "nope"], "layer"), (["--steps", "0"], "--steps"), (["--family", "contrast", "--pixels", "1"],
                                                                     "--family")])
def test_cli_search_bad_input_names_the_field(extra, field, tmp_path, mnist_npy, capsys):
    args = ["search", MNIST, "--input", mnist_npy, "--label", "0", "--span", "0.1", "--steps", "1",
            "--out", str(tmp_path)]
    assert main(args + extra) == 2
    assert f"field '{field}'" in capsys.readouterr().err


def test_cli_search_missing_input_file(tmp_path, capsys):
    assert main(["search", MNIST, "--input", str(tmp_path / "none.npy"), "--label", "0", "--span", "0.1",
                 "--steps", "1"]) == 2
    assert "none.npy: no such file" in capsys.readouterr().err


def test_writer_keeps_examples_on_interrupt(tmp_path, digits):
    network, x, label = digits
    settings = SearchSettings(span=SPAN, steps=STEPS, collect_all=True)

    class Interrupt(Exception):
        pass

    with pytest.raises(Interrupt):
        with ExampleWriter(tmp_path, x) as writer:
            def write_then_stop(found):
                writer.write(found)
                raise Interrupt
            dlv_search(network, x, label, settings, dims=DIMS, on_found=write_then_stop)
    retrain = np.load(tmp_path / "retrain.npz")
    assert retrain["labels"].tolist() == [label] and (tmp_path / "example_0000.npz").is_file()
    assert np.load(tmp_path / "example_0000.npz")["input"].shape == x.shape


def test_cli_minimal_agrees_with_the_api(digits, tmp_path, capsys):
    network, x, label = digits
    path = tmp_path / "x.npy"
    np.save(path, x)
    spans = [0.1, 0.2, 0.3, 0.5]
    args = ["search", str(resources.model_path("digits_cnn")), "--input", str(path), "--label", str(label),
            "--pixels", ",".join(map(str, DIMS)), "--span", "0.1", "--steps", "2", "--json", "--out", str(tmp_path / "out"),
            "--minimal", ",".join(map(str, spans))]
    assert main(args) == 0
    record = json.loads(capsys.readouterr().out)
    report = minimal_search(network, x, DIMS, spans, steps=2, label=label)
    assert (record["min_span"], record["min_pixels"]) == (report.min_span, report.min_pixels)
    assert record["min_span"] is not None
    assert all(np.load(e["input_file"])["new_class"] != label for e in record["examples"])
    assert main(args[:-1] + ["0.1,zero"]) == 2
