"""The bundled models and images: real, small, exactly dyadic, accurate, agreeing across executors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from smtverify import load_onnx, resources
from smtverify.reference import OnnxRuntimeExecutor

# Accuracy on the bundled test images, as stated in the README (a drop means a broken model).
STATED_ACCURACY = {"digits_mlp": 0.9639, "digits_cnn": 0.9778, "mnist_cnn": 0.968}


def test_bundle_is_small():
    data = Path(resources.model_path()).parents[1]
    assert sum(f.stat().st_size for f in data.rglob("*") if f.is_file()) < 1_000_000


@pytest.mark.parametrize("name", sorted(resources.MODELS))
def test_weights_are_multiples_of_two_to_the_minus_eight(name):
    for tensor in onnx.load(str(resources.model_path(name))).graph.initializer:
        w = numpy_helper.to_array(tensor).astype(np.float64)
        assert np.all(w * 256 == np.round(w * 256)), tensor.name


@pytest.mark.parametrize("name", sorted(resources.MODELS))
def test_accuracy_as_stated_and_executors_agree(name):
    network = load_onnx(resources.model_path(name))
    data = resources.test_images(name)
    assert data.images.dtype == np.float32 and data.images.min() >= 0 and data.images.max() <= 1
    ours = network.logits(data.images)
    theirs = OnnxRuntimeExecutor(network).logits(data.images)
    assert np.abs(ours - theirs).max() <= 1e-4
    assert np.mean(ours.argmax(1) == data.labels) == pytest.approx(STATED_ACCURACY[name], abs=5e-4)
