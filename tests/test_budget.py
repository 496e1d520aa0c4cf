"""Budgets are honoured: a timeout ends every phase of a search, memory does not grow with the grid,
and the examples kept and written are capped (counted beyond the cap). No wall-clock assertions:
what is checked is what the search reports and the sizes of what it holds."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import smtverify.fast_eval as fast_eval
import smtverify.grid as grid
from smtverify import load_onnx, resources
from smtverify.budget import Deadline, OutOfTime
from smtverify.cli import main
from smtverify.export import ExampleWriter
from smtverify.features import select_features
from smtverify.fast_eval import TABLE_BYTES, DifferenceEvaluator, choose_evaluator, reach, table_plans
from smtverify.grid import search_grid
from smtverify.lifting import lift
from smtverify.manipulations import PixelManipulation
from smtverify.chain import chain_of
from smtverify.search import SearchSettings, dlv_search
from smtverify.verdict import Verdict

# digits_cnn, test image 11 (class 8): these six pixels moved by 0.25 hold hundreds of examples.
DIGIT, PIXELS = 11, [28, 35, 60, 20, 21, 22]


@pytest.fixture(scope="module")
def mnist():
    network = load_onnx(resources.model_path("mnist_cnn"))
    images = resources.test_images("mnist_cnn")
    return network, images.images[0], int(images.labels[0])


@pytest.fixture(scope="module")
def digits():
    network = load_onnx(resources.model_path("digits_cnn"))
    images = resources.test_images("digits_cnn")
    return network, images.images[DIGIT], int(images.labels[DIGIT])


def test_tiny_timeout_on_a_huge_grid_is_unknown_with_progress(mnist):
    network, x, label = mnist
    settings = SearchSettings(span=0.02, steps=4, features=13, timeout=0.3)
    report = dlv_search(network, x, label, settings)
    assert report.grid_points > 10 ** 9
    assert report.verdict == Verdict.UNKNOWN and report.points_evaluated < report.grid_points
    assert "timeout ran out" in report.reason


def test_no_time_left_evaluates_nothing_and_builds_nothing(mnist):
    network, x, label = mnist
    manipulation = PixelManipulation(x, select_features(network, x, 12, "activation", label), 0.02, 3)
    report = search_grid(network, manipulation, label, max_seconds=0.0)
    assert report.verdict == Verdict.UNKNOWN and report.points_evaluated == 0
    assert report.evaluator.startswith("none") and "timeout ran out" in report.reason


def test_tables_too_slow_to_build_in_time_are_not_chosen(mnist):
    """12 pixels at 3 steps: the tables that pay off over the whole grid take far longer to build
    than a second; with a second left the difference evaluator starts at once."""
    network, x, label = mnist
    manipulation = PixelManipulation(x, select_features(network, x, 12, "activation", label), 0.02, 3)
    chain = chain_of(network)
    fast = DifferenceEvaluator(chain, manipulation)
    whole = manipulation.grid_size
    spent = [reach(plan.build, plan.per_point, whole, math.inf)[1] for plan in table_plans(chain, manipulation, fast)]
    assert min(spent) < reach(0.0, fast.cost, whole, math.inf)[1]                   # no deadline: tables pay
    assert choose_evaluator(network, manipulation, deadline=Deadline.after(1.0)).name == "difference"


def test_a_table_build_past_its_share_gives_way(monkeypatch, mnist):
    """Estimates that make tables look free: the build is abandoned at the deadline's share (the
    difference evaluator takes over); forced tables report OutOfTime instead."""
    network, x, label = mnist
    manipulation = PixelManipulation(x, select_features(network, x, 12, "activation", label), 0.02, 3)
    monkeypatch.setattr(fast_eval, "UNIT_SECONDS", 1e-18)
    assert choose_evaluator(network, manipulation, deadline=Deadline.after(0.2)).name == "difference"
    with pytest.raises(OutOfTime, match="tables"):
        choose_evaluator(network, manipulation, "tables", deadline=Deadline.after(0.0))
    report = search_grid(network, manipulation, label, evaluator="tables", max_seconds=0.2)
    assert report.verdict == Verdict.UNKNOWN and "building the evaluator's tables" in report.reason


def test_tables_stay_within_their_memory_bound(mnist):
    """The gradient pixels of this image make tables of 744 neurons at the second convolution:
    1.6 GB at 4 steps. No plan may exceed TABLE_BYTES, that one included."""
    network, x, label = mnist
    manipulation = PixelManipulation(x, select_features(network, x, 10, "gradient", label), 0.25, 4)
    chain = chain_of(network)
    fast = DifferenceEvaluator(chain, manipulation)
    plans = table_plans(chain, manipulation, fast)
    assert plans and all(plan.table_bytes <= TABLE_BYTES for plan in plans)
    assert 2 not in [plan.cut for plan in plans]


def test_the_grid_evaluator_sees_at_most_a_chunk(monkeypatch, digits):
    """Memory flat by construction: every batch the evaluator gets is at most two chunks, however
    many points the grid has, and each point comes exactly once."""
    network, x, label = digits
    manipulation = PixelManipulation(x, PIXELS, 0.1, 2)
    real = choose_evaluator(network, manipulation, "difference")
    batches: list[int] = []

    class Small:
        name, chunk_size = "small", 64

        def logits(self, c):
            batches.append(len(c))
            return real.logits(c)

    monkeypatch.setattr(grid, "choose_evaluator", lambda *args: Small())
    report = search_grid(network, manipulation, label, collect_all=True)
    assert sum(batches) == report.points_evaluated == manipulation.grid_size > 50 * Small.chunk_size
    assert max(batches) <= 2 * Small.chunk_size


def test_examples_beyond_the_cap_are_counted_not_kept(digits):
    network, x, label = digits
    settings = SearchSettings(span=0.25, steps=2, collect_all=True, max_examples=3)
    kept: list = []
    report = dlv_search(network, x, label, settings, dims=PIXELS, on_found=kept.append)
    assert report.verdict == Verdict.UNSAFE and len(report.examples) == len(kept) == 3
    assert report.examples_found > 100 and report.examples_not_kept == report.examples_found - 3
    assert report.summary()["examples_not_kept"] == report.examples_not_kept


def test_cli_max_files_caps_the_files_and_reports_the_rest(digits, tmp_path, capsys):
    network, x, label = digits
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    args = ["search", str(resources.model_path("digits_cnn")), "--input", str(tmp_path / "x.npy"), "--label",
            str(label), "--pixels", ",".join(map(str, PIXELS)), "--span", "0.25", "--steps", "2", "--all",
            "--max-files", "4", "--out", str(out)]
    assert main(args + ["--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert len(list(out.glob("example_*.npz"))) == record["examples_written"] == len(record["examples"]) == 4
    assert record["examples_not_written"] == record["examples_found"] - 4 > 0
    assert len(np.load(out / "retrain.npz")["labels"]) == 4
    assert main(args + ["--force"]) == 0          # the same run again, in place of the first
    assert f"{record['examples_not_written']:,} more examples found, not written" in capsys.readouterr().out
    assert len(list(out.glob("example_*.npz"))) == 4


def test_writer_counts_what_it_does_not_write(tmp_path, digits):
    network, x, label = digits
    report = dlv_search(network, x, label, SearchSettings(span=0.25, steps=2, collect_all=True, max_examples=None),
                        dims=PIXELS)
    with ExampleWriter(tmp_path, x, max_files=2) as writer:
        for found in report.examples[:5]:
            writer.write(found)
    assert writer.summary()["examples_written"] == 2 and writer.summary()["examples_not_written"] == 3
    assert report.examples[2].input_file is None and len(list(tmp_path.glob("example_*.npz"))) == 2


def test_lifting_with_no_time_left_asks_nothing(mnist):
    network, x, label = mnist

    class NoCalls:
        def __init__(self):
            self.network = network

        def verify(self, _):
            raise AssertionError("the verifier was called with no time left")

    report = lift(NoCalls(), PixelManipulation(x, [100, 200], 0.02, 2), label, 0.0, 64)
    assert (report.cells, report.proven, report.continuous) == (1, 0, False)


def test_hidden_layer_with_no_time_left_is_unknown():
    network = load_onnx(resources.model_path("digits_mlp"))
    images = resources.test_images("digits_mlp")
    settings = SearchSettings(span=0.5, steps=2, features=16, timeout=0.0, layer="relu1")
    report = dlv_search(network, images.images[DIGIT], int(images.labels[DIGIT]), settings)
    assert report.verdict == Verdict.UNKNOWN and report.points_evaluated < report.grid_points
    assert report.hidden[0].refinement == "unknown" and report.hidden[0].tightened == 0
