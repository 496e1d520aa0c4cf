"""The exhaustive grid search: checked against an independent enumeration (itertools + onnxruntime)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import helper

import smtverify.grid as grid
from smtverify import load_onnx, resources
from smtverify.fast_eval import choose_evaluator
from smtverify.grid import grid_points, search_grid
from smtverify.manipulations import (BrightnessManipulation, ContrastManipulation, CustomManipulation,
                                     PixelManipulation, by_closeness, in_domain_float32)
from smtverify.reference import OnnxRuntimeExecutor
from smtverify.verdict import Verdict
from tests.conftest import SHARED, make_model, needs_shared, save

# digits_cnn, test image 11, three mid-grey pixels: 80 grid points, 6 misclassified, none with one
# pixel moved (found by scanning; the tests recompute everything independently).
IMAGE, DIMS, SPAN, STEPS = 11, [28, 35, 60], 0.25, 2


@pytest.fixture(scope="module")
def digits():
    return load_onnx(resources.model_path("digits_cnn")), resources.test_images("digits_cnn")


@pytest.fixture(scope="module")
def small(digits):
    network, images = digits
    return network, PixelManipulation(images.images[IMAGE], DIMS, SPAN, STEPS)


def independent_grid(x: np.ndarray, dims: list[int], span: float, m: int) -> dict[tuple, tuple]:
    """Distinct grid inputs (as tuples of the moved values) -> one c reaching each, by plain loops."""
    flat = x.reshape(-1).astype(np.float64)
    points: dict[tuple, tuple] = {}
    for c in itertools.product(range(-m, m + 1), repeat=len(dims)):
        values = tuple(float(np.float32(min(1.0, max(0.0, flat[p] + k * span)))) for p, k in zip(dims, c))
        points.setdefault(values, c)
    return points


def misclassified(network, x: np.ndarray, dims: list[int], points: dict, label: int) -> set[tuple]:
    keys = list(points)
    batch = np.repeat(x.reshape(1, -1), len(keys), axis=0)
    batch[:, dims] = np.array(keys, dtype=np.float32)
    classes = OnnxRuntimeExecutor(network).classify(batch.reshape((-1,) + x.shape))
    return {key for key, cls in zip(keys, classes) if cls != label}


def moved_values(example, dims: list[int]) -> tuple:
    return tuple(float(v) for v in example.input.reshape(-1)[dims])


@pytest.mark.parametrize("evaluator", ["plain", "difference", "tables"])
def test_collect_all_equals_independent_enumeration(small, evaluator):
    network, manipulation = small
    x = manipulation.original
    label = int(OnnxRuntimeExecutor(network).classify(x)[0])
    points = independent_grid(x, DIMS, SPAN, STEPS)
    wrong = misclassified(network, x, DIMS, points, label)
    report = search_grid(network, manipulation, collect_all=True, evaluator=evaluator)
    assert report.evaluator == evaluator
    assert report.grid_size == report.points_evaluated == len(points)
    assert report.verdict == (Verdict.UNSAFE if wrong else Verdict.SAFE_ON_GRID)
    assert {moved_values(e, DIMS) for e in report.examples} == wrong and len(report.examples) == len(wrong)
    reference = OnnxRuntimeExecutor(network)
    for example in report.examples:
        assert example.input.dtype == np.float32 and example.input.shape == x.shape
        assert int(reference.classify(example.input)[0]) == example.new_class != example.original_class == label
        moved = example.input.astype(np.float64) - x
        assert example.l0 == len(example.changed_dims) == np.count_nonzero(example.c)
        assert set(example.changed_dims) <= set(DIMS)
        assert example.linf == pytest.approx(np.abs(moved).max())
        assert example.l2 == pytest.approx(np.sqrt((moved ** 2).sum()))
        assert example.l1 == pytest.approx(np.abs(moved).sum())


def test_first_example_has_fewest_changed_dimensions(small):
    network, manipulation = small
    x = manipulation.original
    label = int(OnnxRuntimeExecutor(network).classify(x)[0])
    wrong = misclassified(network, x, DIMS, independent_grid(x, DIMS, SPAN, STEPS), label)
    fewest = min(sum(v != x.reshape(-1)[p] for v, p in zip(point, DIMS)) for point in wrong)
    first = search_grid(network, manipulation).examples
    assert len(first) == 1 and first[0].l0 == fewest
    every = search_grid(network, manipulation, collect_all=True).examples
    order = [(np.count_nonzero(e.c), np.abs(e.c).max()) for e in every]
    assert order == sorted(order)


def test_safe_grid_is_safe_on_grid(digits):
    network, images = digits
    report = search_grid(network, PixelManipulation(images.images[IMAGE], DIMS, 0.01, 2))
    assert report.verdict == Verdict.SAFE_ON_GRID and report.points_evaluated == report.grid_size == 125
    assert not report.examples and report.points_per_second > 0


def test_grid_points_every_point_once_in_order():
    """Random admitted levels (as clipping leaves them) and chunk sizes: each point once, by (k, ring)."""
    rng = np.random.default_rng(3)
    for _ in range(80):
        levels = [level[(rng.random(len(level)) < 0.7) | (level == 0)]
                  for level in (by_closeness(int(m)) for m in rng.integers(0, 4, rng.integers(1, 6)))]
        chunk = int(rng.integers(1, 40))
        chunks = list(grid_points(levels, chunk))
        assert all(len(c) <= 2 * chunk for c in chunks)
        got = [tuple(row) for row in np.concatenate(chunks).tolist()]
        assert len(got) == len(set(got)) and set(got) == set(itertools.product(*(lv.tolist() for lv in levels)))
        key = [(sum(v != 0 for v in p), max((abs(v) for v in p), default=0)) for p in got]
        assert key == sorted(key)


def test_clipped_duplicates_are_evaluated_once_and_stay_in_domain(digits):
    network, images = digits
    x = images.images[IMAGE]
    flat = x.reshape(-1)
    dims = [int(np.flatnonzero(flat == 0)[0]), int(np.flatnonzero(flat == 1)[0]), 35]
    manipulation = PixelManipulation(x, dims, 0.4, 3)
    # 0 and 1 keep one side each (0.4, 0.8, 1 / 0.6, 0.2, 0); 0.5625 +- 0.4k reaches 0 and 1 at |k| = 2
    assert [level.tolist() for level in manipulation.levels] == [[0, 1, 2, 3], [0, -1, -2, -3], [0, -1, 1, -2, 2]]
    inputs = np.concatenate([manipulation.apply(c) for c in grid_points(manipulation.levels, 16)])
    assert len(inputs) == manipulation.grid_size == len({row.tobytes() for row in inputs}) == 80
    assert inputs.min() >= 0 and inputs.max() <= 1
    assert search_grid(network, manipulation, collect_all=True).points_evaluated == 80
    domain = (0.2, 0.3)          # float32(0.3) > 0.3: the float32 inputs must not round outside
    inside = PixelManipulation(in_domain_float32(x, domain), dims, 0.05, 3, domain=domain)
    values = np.concatenate([inside.apply(c) for c in grid_points(inside.levels, 64)])
    wide = values.astype(np.float64)
    assert wide.min() >= 0.2 and wide.max() <= 0.3 and np.any(values == np.nextafter(np.float32(0.3), 0))
    with pytest.raises(ValueError):
        PixelManipulation(x, dims, 0.3, 3, domain=domain)


def test_budget_gives_unknown_with_progress(small):
    network, manipulation = small
    report = search_grid(network, manipulation, max_points=10)
    assert report.verdict == Verdict.UNKNOWN and report.points_evaluated == 10 and "10 of 80" in report.reason
    timed = search_grid(network, manipulation, max_seconds=0.0)
    assert timed.verdict == Verdict.UNKNOWN and timed.points_evaluated == 0


def test_deterministic(small):
    network, manipulation = small
    runs = [search_grid(network, manipulation, collect_all=True).summary() for _ in range(2)]
    for run in runs:
        for key in ("seconds", "points_per_second"):
            run.pop(key)
    assert runs[0] == runs[1]


def test_near_ties_are_rechecked_not_guessed(small):
    """A huge tie tolerance sends every point to the independent executors: same outcome."""
    network, manipulation = small
    plain = search_grid(network, manipulation, collect_all=True)
    rechecked = search_grid(network, manipulation, collect_all=True, tie_tolerance=10.0)
    assert rechecked.near_ties == manipulation.grid_size - len(plain.examples)
    assert [e.c.tolist() for e in rechecked.examples] == [e.c.tolist() for e in plain.examples]


def test_unconfirmed_hits_are_dropped(monkeypatch, small):
    """An evaluator that calls every point class label+1 is overruled by onnxruntime."""
    network, manipulation = small
    safe = PixelManipulation(manipulation.original, DIMS, 0.01, 1)
    label = int(OnnxRuntimeExecutor(network).classify(safe.original)[0])

    class Liar:
        name, chunk_size = "liar", 8

        def logits(self, c):
            return np.eye(10, dtype=np.float32)[np.full(len(c), (label + 1) % 10)]

    monkeypatch.setattr(grid, "choose_evaluator", lambda *args: Liar())
    report = search_grid(network, safe)
    assert report.verdict == Verdict.SAFE_ON_GRID and not report.examples
    assert report.unconfirmed == safe.grid_size == 27


@pytest.mark.parametrize("model", ["digits_cnn", "mnist_cnn", "digits_mlp"])
def test_fast_evaluators_match_plain_executor(model):
    network = load_onnx(resources.model_path(model))
    x = resources.test_images(model).images[0]
    rng = np.random.default_rng(7)
    dims = rng.choice(x.size, 6, replace=False)
    manipulation = PixelManipulation(x, dims, 0.3, 3)
    c = rng.integers(-3, 4, size=(3000, 6))
    plain = choose_evaluator(network, manipulation, "plain").logits(c)
    for kind in ("difference", "tables"):
        logits = np.asarray(choose_evaluator(network, manipulation, kind).logits(c))
        np.testing.assert_array_equal(logits.argmax(axis=1), plain.argmax(axis=1))
        np.testing.assert_allclose(logits, plain, atol=1e-4 * np.abs(plain).max())


def tiny_networks(folder) -> list:
    """A flat-input MLP (6 values) and a 3-channel conv net (3x5x5), random fixed weights."""
    rng = np.random.default_rng(11)
    weights = {k: rng.normal(size=s).astype(np.float32) for k, s in
               [("w1", (6, 8)), ("b1", (8,)), ("w2", (8, 4)), ("k", (2, 3, 2, 2)), ("w3", (32, 4)), ("b2", (4,))]}
    mlp = make_model([helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
                      helper.make_node("Gemm", ["r", "w2", "b2"], ["y"])], ["N", 6],
                     initializers={k: weights[k] for k in ("w1", "b1", "w2", "b2")})
    conv = make_model([helper.make_node("Conv", ["x", "k"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
                       helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("Gemm", ["f", "w3", "b2"], ["y"])],
                      ["N", 3, 5, 5], initializers={k: weights[k] for k in ("k", "w3", "b2")})
    return [load_onnx(save(model, folder, f"{name}.onnx")) for name, model in (("mlp", mlp), ("conv", conv))]


def test_flat_and_channel_inputs(tmp_path):
    """Pixel grids on a flat input and on a (C, H, W) input: every evaluator, every misclassified point."""
    for network in tiny_networks(tmp_path):
        x = np.random.default_rng(5).uniform(0.2, 0.8, network.input_shape).astype(np.float32)
        dims = [0, 4, x.size - 1]
        manipulation = PixelManipulation(x, dims, 0.3, 2)           # some values clip: 100 points
        label = int(OnnxRuntimeExecutor(network).classify(x)[0])
        points = independent_grid(x, dims, 0.3, 2)
        wrong = misclassified(network, x, dims, points, label)
        assert len(points) == 100 and 10 < len(wrong) < 30
        for kind in ("plain", "difference", "tables"):
            report = search_grid(network, manipulation, collect_all=True, evaluator=kind)
            assert report.points_evaluated == 100
            assert {moved_values(e, dims) for e in report.examples} == wrong


@needs_shared
def test_pixels_that_reach_no_logit():
    """Convnet_maxpool pools only 24 of its 27 conv rows: the last input row changes nothing."""
    network = load_onnx(SHARED / "verivital" / "onnx" / "Convnet_maxpool.onnx")
    manipulation = PixelManipulation(np.full((1, 28, 28), 0.5, np.float32), [27 * 28 + 3, 27 * 28 + 20], 0.1, 2)
    c = np.array([[0, 0], [2, -2], [-1, 1]])
    plain = choose_evaluator(network, manipulation, "plain").logits(c)
    np.testing.assert_array_equal(plain, np.repeat(plain[:1], 3, axis=0))
    for kind in ("difference", "tables"):
        np.testing.assert_allclose(choose_evaluator(network, manipulation, kind).logits(c), plain, atol=1e-5)
    assert search_grid(network, manipulation).verdict == Verdict.SAFE_ON_GRID


def test_auto_evaluator_prefers_tables_on_conv_nets():
    network = load_onnx(resources.model_path("mnist_cnn"))
    x = resources.test_images("mnist_cnn").images[0]
    dims = np.argsort(np.abs(x.reshape(-1) - 0.5), kind="stable")[:6]
    assert choose_evaluator(network, PixelManipulation(x, dims, 0.02, 3)).name == "tables"
    assert choose_evaluator(network, BrightnessManipulation(x, 0.1, 2)).name == "plain"
    with pytest.raises(ValueError):
        choose_evaluator(network, BrightnessManipulation(x, 0.1, 2), "tables")


def test_brightness_finds_a_checkable_example(digits):
    network, images = digits
    x = images.images[0]
    report = search_grid(network, BrightnessManipulation(x, 0.1, 8))
    assert report.verdict == Verdict.UNSAFE
    example = report.examples[0]
    assert example.c.tolist() == [7]                 # the smallest brightening that flips the class
    np.testing.assert_array_equal(example.input, np.clip(x + 7 * 0.1, 0, 1).astype(np.float32))
    assert OnnxRuntimeExecutor(network).classify(example.input)[0] == example.new_class != report.label
    saturated = BrightnessManipulation(x, 0.25, 8)   # from +1.0 on every pixel is 1: one point left
    assert saturated.grid_size == 9 and saturated.levels[0].tolist() == [0, -1, 1, -2, 2, -3, 3, -4, 4]


def test_contrast_refutes_small_and_finds_large(digits):
    network, images = digits
    x = images.images[0]
    assert search_grid(network, ContrastManipulation(x, 0.05, 3)).verdict == Verdict.SAFE_ON_GRID
    report = search_grid(network, ContrastManipulation(x, 0.2, 5), collect_all=True)
    mean = x.astype(np.float64).mean()
    assert [e.c.tolist() for e in report.examples] == [[-5]]
    expected = np.clip(mean + (1 - 5 * 0.2) * (x - mean), 0, 1).astype(np.float32)   # flat grey
    np.testing.assert_array_equal(report.examples[0].input, expected)


def test_user_family_matches_independent_enumeration(digits):
    """Blend toward another digit plus a brightness shift: 21 x 5 points."""
    network, images = digits
    x, y = images.images[0], images.images[1]

    def blend(c: np.ndarray) -> np.ndarray:
        return x[None] + 0.1 * c[:, :1, None, None] * (y - x)[None] + 0.05 * c[:, 1:2, None, None]

    report = search_grid(network, CustomManipulation(blend, [10, 2]), collect_all=True)
    every = np.array(list(itertools.product(range(-10, 11), range(-2, 3))))
    inputs = np.clip(blend(every).astype(np.float64), 0, 1).astype(np.float32)
    classes = OnnxRuntimeExecutor(network).classify(inputs)
    wrong = {tuple(c) for c, cls in zip(every.tolist(), classes) if cls != report.label}
    assert report.verdict == Verdict.UNSAFE and report.grid_size == 105
    assert {tuple(e.c.tolist()) for e in report.examples} == wrong
