"""Every kind of bad input raises the project's own error, naming the file and the node at fault,
and the CLI reports it in one line with a non-zero exit status."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from smtverify import load_onnx
from smtverify.cli import main
from smtverify.errors import (ExternalDataError, InputFileError, InputShapeError, InvalidWeightsError,
                              MissingInitializerError, ModelError, UnsupportedOperatorError)
from smtverify.inputs import read_input
from tests.conftest import make_model, save


def small_model(w: np.ndarray | None = None) -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="dense"),
             helper.make_node("Relu", ["h"], ["y"], name="act")]
    return make_model(nodes, ["N", 3], initializers={"w": np.ones((3, 2), np.float32) if w is None else w})


def test_unsupported_operator_names_node_and_operator(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Cos", ["h"], ["y"], name="weird")]
    path = save(make_model(nodes, ["N", 3], initializers={"w": np.ones((3, 2), np.float32)}), tmp_path)
    with pytest.raises(UnsupportedOperatorError) as caught:
        load_onnx(path)
    message = str(caught.value)
    assert str(path) in message and "node 'weird'" in message and "'Cos'" in message


def test_unsupported_operator_form(tmp_path):
    nodes = [helper.make_node("Mul", ["x", "x"], ["y"])]
    with pytest.raises(UnsupportedOperatorError, match="not piecewise-linear"):
        load_onnx(save(make_model(nodes, ["N", 3]), tmp_path))


def test_softmax_only_as_last_node(tmp_path):
    nodes = [helper.make_node("Softmax", ["x"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    with pytest.raises(UnsupportedOperatorError, match="last node"):
        load_onnx(save(make_model(nodes, ["N", 3]), tmp_path))


def test_missing_initializer_names_node_and_tensor(tmp_path):
    model = small_model()
    del model.graph.initializer[:]
    path = tmp_path / "missing.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(MissingInitializerError) as caught:
        load_onnx(path)
    assert "node 'dense'" in str(caught.value) and "'w'" in str(caught.value) and "missing.onnx" in str(caught.value)


def test_malformed_file(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x08\x07this is not a protobuf\xff\xff\xff")
    with pytest.raises(ModelError, match="garbage.onnx"):
        load_onnx(path)


def test_truncated_file(tmp_path):
    data = small_model(np.arange(600, dtype=np.float32).reshape(3, 200)).SerializeToString()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated.onnx"):
        load_onnx(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        load_onnx(tmp_path / "nope.onnx")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_weights(tmp_path, bad):
    w = np.ones((3, 2), np.float32)
    w[1, 1] = bad
    with pytest.raises(InvalidWeightsError) as caught:
        load_onnx(save(small_model(w), tmp_path))
    assert "node 'dense'" in str(caught.value) and "'w'" in str(caught.value)


def test_symbolic_non_batch_axis_is_refused(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    with pytest.raises(ModelError, match="axis 1 is symbolic"):
        load_onnx(save(make_model(nodes, ["N", "width"]), tmp_path))


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    model = small_model(np.ones((3, 200), np.float32))
    tensor = model.graph.initializer[0]
    outside = tmp_path / "outside.bin"
    outside.write_bytes(numpy_helper.to_array(tensor).tobytes())
    onnx.external_data_helper.set_external_data(tensor, location="../outside.bin")
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ExternalDataError, match="outside the model's folder"):
        load_onnx(path)


def test_external_data_inside_the_folder_loads(tmp_path):
    model = small_model(np.ones((3, 200), np.float32))
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.data", size_threshold=0)
    network = load_onnx(tmp_path / "m.onnx")
    assert network.n_outputs == 200


def test_wrong_input_shape(tmp_path):
    network = load_onnx(save(small_model(), tmp_path))
    with pytest.raises(InputShapeError, match=r"expects \[3\]"):
        network.run(np.zeros((2, 4), np.float32))
    np.save(tmp_path / "wrong.npy", np.zeros((4,), np.float32))
    with pytest.raises(InputShapeError, match="wrong.npy"):
        read_input(tmp_path / "wrong.npy", network)


def test_unreadable_input_file(tmp_path):
    network = load_onnx(save(small_model(), tmp_path))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputFileError, match="broken.png"):
        read_input(tmp_path / "broken.png", network)


def test_cli_reports_one_line_and_exit_status(tmp_path, capsys):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"garbage")
    assert main(["info", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("smtverify: error:") and "garbage.onnx" in captured.err
    with pytest.raises(ModelError):
        main(["info", str(path), "--debug"])


def test_cli_info_lists_unsupported_operators(tmp_path, capsys):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Cos", ["h"], ["y"])]
    path = save(make_model(nodes, ["N", 3], initializers={"w": np.ones((3, 2), np.float32)}), tmp_path)
    assert main(["info", str(path)]) == 2
    out = capsys.readouterr().out
    assert "UNSUPPORTED" in out and "supported: NO" in out and "'Cos'" in out
