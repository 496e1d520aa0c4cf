"""Each operator against onnxruntime, on small models built inline, in its less common forms too."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from smtverify import load_onnx
from tests.conftest import make_model, save

RNG = np.random.default_rng(7)


def weights(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape).astype(np.float32)


def check_against_onnxruntime(tmp_path, model, sample_shape: tuple[int, ...], batch: int = 5) -> np.ndarray:
    """Runs a batch through both executors; the batch goes to onnxruntime one input at a time."""
    path = save(model, tmp_path)
    network = load_onnx(path)
    assert network.input_shape == sample_shape
    xs = np.random.default_rng(1).uniform(-1, 1, size=(batch,) + sample_shape).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = (lambda x: x[None]) if network.native_batch else (lambda x: x)
    expected = np.stack([session.run(None, {"x": feed(x)})[0] for x in xs])
    ours = network.run(xs)[network.output_name]
    assert ours.shape == expected.reshape((batch,) + ours.shape[1:]).shape
    np.testing.assert_allclose(ours, expected.reshape(ours.shape), rtol=1e-5, atol=1e-5)
    float64 = network.run(xs, np.float64)[network.output_name]
    np.testing.assert_allclose(float64, expected.reshape(ours.shape), rtol=1e-4, atol=1e-4)
    return ours


CONV_CASES = [
    dict(),
    dict(strides=[2, 2]),
    dict(pads=[1, 2, 0, 1]),
    dict(dilations=[2, 1], pads=[1, 1, 1, 1]),
    dict(group=2),
    dict(auto_pad="SAME_UPPER", strides=[2, 2]),
    dict(auto_pad="SAME_LOWER"),
    dict(auto_pad="VALID", strides=[1, 2]),
]


@pytest.mark.parametrize("attrs", CONV_CASES, ids=[str(c) or "plain" for c in CONV_CASES])
def test_conv(tmp_path, attrs):
    groups = attrs.get("group", 1)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], **attrs)
    model = make_model([node], ["N", 4, 9, 8], initializers={"w": weights(6, 4 // groups, 3, 3), "b": weights(6)})
    check_against_onnxruntime(tmp_path, model, (4, 9, 8))


def test_depthwise_conv_without_bias(tmp_path):
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=3, strides=[2, 1])
    model = make_model([node], [1, 3, 7, 7], initializers={"w": weights(3, 1, 2, 2)})
    check_against_onnxruntime(tmp_path, model, (3, 7, 7))


POOL_CASES = [
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2])),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    ("MaxPool", dict(kernel_shape=[3, 2], pads=[1, 0, 1, 1], dilations=[1, 2])),
    ("MaxPool", dict(kernel_shape=[2, 2], auto_pad="SAME_UPPER", strides=[2, 2])),
    ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2])),
    ("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0)),
    ("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1)),
]


@pytest.mark.parametrize("op,attrs", POOL_CASES, ids=[f"{o}-{a}" for o, a in POOL_CASES])
def test_pooling(tmp_path, op, attrs):
    model = make_model([helper.make_node(op, ["x"], ["y"], **attrs)], ["N", 2, 8, 9], opset=19 if "dilations" in attrs else 13)
    check_against_onnxruntime(tmp_path, model, (2, 8, 9))


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_modes(tmp_path, mode):
    nodes = [helper.make_node("Pad", ["x", "pads", "value"], ["y"], mode=mode)]
    inits = {"pads": np.array([0, 0, 1, 2, 0, 0, 2, 1], dtype=np.int64), "value": np.array(0.5, np.float32)}
    check_against_onnxruntime(tmp_path, make_model(nodes, [1, 2, 5, 5], initializers=inits), (2, 5, 5))


def test_pad_as_attribute_in_old_opset(tmp_path):
    node = helper.make_node("Pad", ["x"], ["y"], pads=[0, 0, 1, 1, 0, 0, 1, 1], value=-1.0)
    check_against_onnxruntime(tmp_path, make_model([node], [1, 1, 4, 4], opset=9), (1, 4, 4))


def test_batch_normalization_then_relu(tmp_path):
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["bn"], epsilon=1e-3),
             helper.make_node("Relu", ["bn"], ["y"])]
    inits = {"s": weights(3), "b": weights(3), "m": weights(3), "v": np.abs(weights(3)) + 0.1}
    check_against_onnxruntime(tmp_path, make_model(nodes, ["N", 3, 4, 4], initializers=inits), (3, 4, 4))


def test_gemm_attributes_and_activations(tmp_path):
    nodes = [helper.make_node("Flatten", ["x"], ["f"]),
             helper.make_node("Gemm", ["f", "w", "c"], ["g"], transB=1, alpha=0.5, beta=2.0),
             helper.make_node("Sigmoid", ["g"], ["s"]),
             helper.make_node("Gemm", ["s", "w2"], ["h"]),
             helper.make_node("Tanh", ["h"], ["t"]),
             helper.make_node("Softmax", ["t"], ["y"])]
    inits = {"w": weights(7, 12), "c": weights(7), "w2": weights(7, 4)}
    check_against_onnxruntime(tmp_path, make_model(nodes, ["N", 3, 4], initializers=inits), (3, 4))


def test_elementwise_with_constants_and_residual_add(tmp_path):
    nodes = [helper.make_node("Sub", ["x", "mean"], ["a"]),
             helper.make_node("Div", ["a", "std"], ["b"]),
             helper.make_node("Mul", ["k", "b"], ["c"]),
             helper.make_node("Sub", ["k", "c"], ["d"]),
             helper.make_node("Add", ["d", "b"], ["y"])]
    inits = {"mean": np.float32(0.25), "std": np.array([0.5, 2.0], np.float32).reshape(1, 2, 1), "k": weights(3)}
    check_against_onnxruntime(tmp_path, make_model(nodes, [1, 2, 3], initializers=inits), (2, 3))


def test_reshape_with_hard_coded_batch_of_one(tmp_path):
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("MatMul", ["r", "w"], ["y"])]
    inits = {"shape": np.array([1, -1], np.int64), "w": weights(12, 3)}
    model = make_model(nodes, [1, 3, 4], initializers=inits)
    check_against_onnxruntime(tmp_path, model, (3, 4))
    assert load_onnx(save(model, tmp_path)).batchable


def test_shape_operators_in_two_opsets(tmp_path):
    for opset in (11, 13):
        axes = {"axes": [1]} if opset == 11 else {}
        inputs = [] if opset == 11 else ["axes"]
        nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1, 3]),
                 helper.make_node("Unsqueeze", ["t"] + inputs, ["u"], **axes),
                 helper.make_node("Squeeze", ["u"] + inputs, ["s"], **axes),
                 helper.make_node("Identity", ["s"], ["i"]),
                 helper.make_node("Dropout", ["i"], ["d"]),
                 helper.make_node("Concat", ["d", "extra", "i"], ["y"], axis=2)]
        inits = {"extra": weights(1, 3, 2, 5)} | ({} if opset == 11 else {"axes": np.array([1], np.int64)})
        check_against_onnxruntime(tmp_path, make_model(nodes, [1, 2, 3, 5], initializers=inits, opset=opset), (2, 3, 5))


def test_constant_subgraph_is_folded(tmp_path):
    nodes = [helper.make_node("Constant", [], ["c"], value=helper.make_tensor("v", 1, [2], [1.0, 2.0])),
             helper.make_node("Mul", ["c", "two"], ["c2"]),
             helper.make_node("MatMul", ["x", "w"], ["m"]),
             helper.make_node("Add", ["m", "c2"], ["y"])]
    model = make_model(nodes, ["batch", 3], initializers={"two": np.float32(2), "w": weights(3, 2)})
    check_against_onnxruntime(tmp_path, model, (3,))
    assert [layer.op_type for layer in load_onnx(save(model, tmp_path)).order] == ["MatMul", "Add"]


def test_every_layer_activation_is_returned(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    network = load_onnx(save(make_model(nodes, ["N", 4], initializers={"w": weights(4, 3)}), tmp_path))
    values = network.run(np.ones((6, 4), np.float32))
    assert set(values) == {"x", "h", "y"}
    assert values["h"].shape == (6, 3) and values["h"].dtype == np.float32
    np.testing.assert_array_equal(values["y"], np.maximum(values["h"], 0))
    assert network.run(np.ones((6, 4)), np.float64)["y"].dtype == np.float64
    assert set(network.run(np.ones(4), keep="output")) == {"y"}   # intermediates freed as it goes
