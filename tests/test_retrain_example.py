"""examples/retrain.py and the training digits it needs: the bundled training subset is what it says
(4,500 real digits, balanced, disjoint from the test images), the numpy fine-tuning really trains the
head and only the head, on the 2^-8 grid, and a tiny end-to-end run prints its before/after table."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from smtverify import load_onnx, resources

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "retrain.py"


@pytest.fixture(scope="module")
def retrain():
    """The example script as a module (its functions are what the end-to-end run uses)."""
    spec = importlib.util.spec_from_file_location("retrain_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # its dataclass looks its module up while being made
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def examples(retrain):
    """Adversarial examples of the bundled CNN on its first 12 training images, by the script's search."""
    train = resources.training_images("mnist_cnn")
    settings = retrain.search_settings(argparse.Namespace(
        span=0.5, steps=1, features=6, rounds=4, examples_per_image=8, search_timeout=30.0))
    inputs, labels, l0 = retrain.find_examples(resources.model_path("mnist_cnn"), train.images[:12],
                                               train.labels[:12], settings)
    assert len(labels) > 0
    return inputs, labels, l0


def test_training_subset_is_the_real_balanced_disjoint_mnist_split():
    train, test = resources.training_images("mnist_cnn"), resources.test_images("mnist_cnn")
    assert train.images.shape == (4500, 1, 28, 28) and train.images.dtype == np.float32
    assert np.bincount(train.labels).tolist() == [450] * 10
    assert train.images.min() == 0 and train.images.max() == 1
    raw_train = np.load(resources.model_path().parents[1] / "images" / "mnist_train.npz")["images"]
    raw_test = np.load(resources.model_path().parents[1] / "images" / "mnist_test.npz")["images"]
    assert raw_train.dtype == np.uint8 and np.array_equal(raw_train / np.float32(255), train.images[:, 0])
    test_rows = {row.tobytes() for row in raw_test.reshape(len(raw_test), -1)}
    assert not any(row.tobytes() in test_rows for row in raw_train.reshape(len(raw_train), -1))
    assert len({row.tobytes() for row in raw_train.reshape(len(raw_train), -1)}) == 4500
    # It is what the model was trained on: the model fits it better than the held-out images.
    network = load_onnx(resources.model_path("mnist_cnn"))
    train_acc = np.mean(network.logits(train.images).argmax(1) == train.labels)
    test_acc = np.mean(network.logits(test.images).argmax(1) == test.labels)
    assert train_acc > test_acc and train_acc > 0.99


def test_no_training_images_for_the_digits_models():
    with pytest.raises(KeyError, match="no bundled training images"):
        resources.training_images("digits_mlp")


def test_examples_are_misclassified_and_labelled_with_the_true_class(retrain, examples):
    inputs, labels, l0 = examples
    predicted = load_onnx(resources.model_path("mnist_cnn")).logits(inputs).argmax(1)
    assert np.all(predicted != labels)
    train = resources.training_images("mnist_cnn")
    assert set(labels.tolist()) <= set(train.labels[:12].tolist())
    assert np.all(l0 > 0) and np.all(inputs >= 0) and np.all(inputs <= 1)


def test_head_gradient_matches_finite_differences(retrain, monkeypatch):
    """With a grid so fine that rounding is the identity, the straight-through gradient is the true one."""
    monkeypatch.setattr(retrain, "GRID", 2.0 ** 40)
    rng = np.random.default_rng(1)
    features, labels = rng.random((7, 12)), rng.integers(0, 10, 7)
    head = {"fc1.weight": rng.normal(size=(5, 12)), "fc1.bias": rng.normal(size=5),
            "fc2.weight": rng.normal(size=(10, 5)), "fc2.bias": rng.normal(size=10)}
    _, grads = retrain.head_loss(head, features, labels, gradient=True)
    for name, index in (("fc1.weight", (2, 3)), ("fc1.bias", (4,)), ("fc2.weight", (7, 1)), ("fc2.bias", (0,))):
        moved = {k: v.copy() for k, v in head.items()}
        moved[name][index] += 1e-6
        up = retrain.head_loss(moved, features, labels)[0]
        moved[name][index] -= 2e-6
        down = retrain.head_loss(moved, features, labels)[0]
        assert (up - down) / 2e-6 == pytest.approx(grads[name][index], rel=1e-4, abs=1e-8)


def test_fine_tuning_lowers_the_loss_and_changes_only_the_head(retrain, examples, tmp_path):
    inputs, labels, _ = examples
    old = resources.model_path("mnist_cnn")
    train = resources.training_images("mnist_cnn")
    clean = retrain.frozen_features(old, train.images[:1000])
    adversarial = retrain.frozen_features(old, inputs)
    head = retrain.read_head(old)
    new_head = retrain.fine_tune(head, np.concatenate([clean, adversarial]),
                                 np.concatenate([train.labels[:1000], labels]), epochs=3, lr=1e-3, seed=0)
    before, after = retrain.head_loss(head, adversarial, labels)[0], retrain.head_loss(new_head, adversarial, labels)[0]
    assert after < before / 2
    for w in new_head.values():
        assert np.array_equal(w * 256, np.round(w * 256))

    path = tmp_path / "new.onnx"
    retrain.write_model(old, new_head, path)
    old_weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(old)).graph.initializer}
    new_weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    assert old_weights.keys() == new_weights.keys()
    for name in old_weights:
        same = np.array_equal(old_weights[name], new_weights[name])
        assert same == (name not in retrain.HEAD), name
        assert new_weights[name].dtype == np.float32
    # onnxruntime runs the new file, and its logits are the numpy head's on the frozen features.
    session = retrain.runtime_session(onnx.load(str(path)))
    logits = session.run(None, {"input": inputs})[0]
    labels_loss = retrain.head_loss(new_head, adversarial, labels)[0]
    log_p = logits.astype(np.float64) - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    assert -log_p[np.arange(len(labels)), labels].mean() == pytest.approx(labels_loss, rel=1e-3, abs=1e-4)
    assert np.mean(logits.argmax(1) == labels) > 0.9     # the examples it was trained on


def test_replaying_the_original_grids_finds_the_originals_examples(retrain):
    test = resources.test_images("mnist_cnn")
    model = resources.model_path("mnist_cnn")
    settings = retrain.search_settings(argparse.Namespace(
        span=0.5, steps=1, features=6, rounds=4, examples_per_image=8, search_timeout=30.0))
    x, y = test.images[:6], test.labels[:6]
    searched, grids = retrain.held_out_search(model, x, y, settings)
    replayed = retrain.replay(model, x, y, grids)
    assert replayed.correct == searched.correct
    assert [l0 is None for l0 in replayed.smallest_l0] == [l0 is None for l0 in searched.smallest_l0]
    assert searched.attacked() > 0
    for mine, theirs in zip(replayed.smallest_l0, searched.smallest_l0):
        assert theirs is None or mine <= theirs


def test_tiny_end_to_end_run_prints_the_table(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, str(SCRIPT), "--train-images", "8", "--test-images", "3",
                           "--epochs", "2", "--eps", "0.01", "--item-timeout", "5", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for pattern in (r"^1\. search over 8 training images: \d+ adversarial examples",
                    r"^2\. fine-tuned .* loss on the examples [\d.]+ -> [\d.]+",
                    r"^\| clean accuracy, all 500 test images +\| +[\d.]+% \| +[\d.]+% \|$",
                    r"^\| adversarial example on the original's search grids +\| +\d+/\d+ \| +\d+/\d+ \|$",
                    r"^\| adversarial example, the model's own search +\| +\d+/\d+ \| +\d+/\d+ \|$",
                    r"^\| verified accuracy at eps 0\.01 +\| +[\d.]+% \| +[\d.]+% \|$"):
        assert any(re.search(pattern, line) for line in lines), (pattern, done.stdout)
    record = json.loads((out / "retrain.json").read_text())
    assert set(record["before"]) == set(record["after"])
    assert record["losses"]["examples"][1] < record["losses"]["examples"][0]
    assert (out / "mnist_cnn_retrained.onnx").exists() and (out / "retrain.npz").exists()
    with np.load(out / "retrain.npz") as saved:
        assert len(saved["inputs"]) == len(saved["labels"]) == record["training_examples"]
