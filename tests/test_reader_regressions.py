"""Regressions from fuzzing the readers (scripts/fuzz_readers.py): each input once escaped as a
bare Python exception, a hang or a runaway allocation; each must now be a named error that says
which file, node, field or line is at fault."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from smtverify import load_onnx
from smtverify.errors import InvalidWeightsError, ModelError, UnsupportedOperatorError, VnnlibError
from smtverify.sexpr import MAX_NESTING, chunks
from smtverify.vnnlib import MAX_LITERAL_LENGTH, read_vnnlib
from tests.conftest import make_model, save
from tests.test_vnnlib import BOX, write


def dense_model() -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="dense"),
             helper.make_node("Relu", ["h"], ["y"], name="act")]
    return make_model(nodes, ["N", 3], initializers={"w": np.ones((3, 2), np.float32)})


def save_bytes(data: bytes, folder, name: str = "model.onnx"):
    path = folder / name
    path.write_bytes(data)
    return path


# ----- ONNX ----------------------------------------------------------------------------------

def test_initializer_data_that_does_not_fit_its_dims(tmp_path):
    model = dense_model()
    model.graph.initializer[0].raw_data += b"\x00\x00\x80\x3f"     # a seventh float for dims [3, 2]
    with pytest.raises(ModelError, match=r"tensor 'w': its data does not fit its dims \[3, 2\]") as caught:
        load_onnx(save(model, tmp_path))
    assert caught.value.node == "dense" and caught.value.file.endswith("model.onnx")


@pytest.mark.parametrize("data_type", [99, TensorProto.UNDEFINED])
def test_undefined_tensor_data_type(tmp_path, data_type):
    model = dense_model()
    model.graph.initializer[0].data_type = data_type
    with pytest.raises(ModelError, match=rf"tensor 'w' has data type {data_type}, which ONNX does not define"):
        load_onnx(save(model, tmp_path))


def test_name_that_is_not_utf8(tmp_path):
    data = dense_model().SerializeToString().replace(b"dense", b"d\xfdnse")
    with pytest.raises(ModelError, match="not valid UTF-8") as caught:
        load_onnx(save_bytes(data, tmp_path))
    assert caught.value.field == "graph.node.name"


def test_node_without_outputs(tmp_path):
    model = dense_model()
    extra = model.graph.node.add()
    extra.CopyFrom(helper.make_node("Relu", ["y"], [], name="dangling"))
    with pytest.raises(ModelError, match="Relu has no output") as caught:
        load_onnx(save(model, tmp_path))
    assert caught.value.node == "dangling"


def test_padding_to_a_huge_tensor_is_refused_before_allocating(tmp_path):
    nodes = [helper.make_node("Pad", ["x", "pads"], ["y"], name="pad")]
    pads = np.array([0, 0, 0, 2 ** 31, 0, 0, 0, 0], dtype=np.int64)
    model = make_model(nodes, [1, 1, 4, 4], initializers={"pads": pads})
    with pytest.raises(ModelError, match="tensor 'y' would have shape .*more than") as caught:
        load_onnx(save(model, tmp_path))
    assert caught.value.node == "pad"


@pytest.mark.parametrize("shape, match", [([1, 2 ** 31, 28], "more than"), ([1, 0, 3], "axis 1 has size 0")])
def test_input_shape_out_of_range(tmp_path, shape, match):
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], shape)
    with pytest.raises(ModelError, match=match):
        load_onnx(save(model, tmp_path))


def test_conv_with_zero_groups(tmp_path):
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv", group=1)], [1, 1, 4, 4],
                       initializers={"w": np.ones((2, 1, 3, 3), np.float32)})
    model.graph.node[0].attribute[0].i = 0
    with pytest.raises(UnsupportedOperatorError, match="group=0") as caught:
        load_onnx(save(model, tmp_path))
    assert caught.value.node == "conv"


def test_unsupported_operator_problem_names_the_node_and_operator(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="dense"),
             helper.make_node("Cos", ["h"], ["y"], name="weird")]
    path = save(make_model(nodes, ["N", 3], initializers={"w": np.ones((3, 2), np.float32)}), tmp_path)
    network = load_onnx(path, strict=False)
    (problem,) = network.problems
    assert problem.node == "weird" and "'Cos'" in str(problem) and str(path) in str(problem)


def test_unnamed_node_is_named_by_its_output(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Cos", ["h"], ["y"])]
    path = save(make_model(nodes, ["N", 3], initializers={"w": np.ones((3, 2), np.float32)}), tmp_path)
    assert load_onnx(path, strict=False).problems[0].node == "y"


# ----- VNN-LIB -------------------------------------------------------------------------------

@pytest.mark.parametrize("number", ["1e400", "-1.8e308", "1e-400", "1e999999999", "-1e-999999999"])
def test_number_outside_float_range(tmp_path, number):
    path = write(tmp_path, BOX + f"(assert (<= Y_0 {number}))\n")
    with pytest.raises(VnnlibError, match=r"prop.vnnlib:9: number .* is outside float64's range"):
        read_vnnlib(path)


@pytest.mark.parametrize("formula, what", [
    ("(<= X_0 (* 1e200 1e200))", "the bound on X_0"),
    ("(>= (* 1e-200 1e-200 X_1) 1)", "the bound on X_1"),
    ("(<= (* 1e300 1e300 Y_0) 1)", "a coefficient or the constant"),
    ("(<= Y_0 (+ 1e308 1e308))", "a coefficient or the constant")])
def test_derived_value_outside_float_range(tmp_path, formula, what):
    path = write(tmp_path, BOX + f"(assert {formula})\n")
    with pytest.raises(VnnlibError, match=rf"prop.vnnlib:9: {what} is beyond float64's range"):
        read_vnnlib(path)


def test_exact_row_scaled_beyond_float_range(tmp_path):
    path = write(tmp_path, BOX + "(assert (<= (* 0.1 Y_0) 1.7e308))\n")
    with pytest.raises(VnnlibError, match="constant scaled by 10 is beyond float64's range"):
        read_vnnlib(path)


def test_deep_nesting(tmp_path):
    depth = 10 * MAX_NESTING
    path = write(tmp_path, BOX + "(assert " + "(and " * depth + "(<= Y_0 1)" + ")" * depth + ")\n")
    with pytest.raises(VnnlibError, match=rf"prop.vnnlib:9: forms nested more than {MAX_NESTING} deep"):
        read_vnnlib(path)


def test_overlong_literal(tmp_path):
    path = write(tmp_path, BOX + "(assert (<= Y_0 1." + "0" * MAX_LITERAL_LENGTH + "1))\n")
    with pytest.raises(VnnlibError, match=rf"prop.vnnlib:9: number '1.0+\.\.\.' is longer than {MAX_LITERAL_LENGTH}"):
        read_vnnlib(path)


def test_exact_decimal_of_a_float_is_not_too_long(tmp_path):
    literal = f"{np.nextafter(0.1, 1):.760e}"       # every digit of the float, as tools may print it
    path = write(tmp_path, BOX + f"(assert (<= Y_0 {literal}))\n")
    (case,) = read_vnnlib(path).cases
    assert case.unsafe[0].b[0] == np.nextafter(0.1, 1)


@pytest.mark.parametrize("text, match", [
    ("(declare-const X_1\u0663 Real)", "prop.vnnlib:9: variable 'X_1\u0663' must be named X_i"),
    ("(assert (<= Y_0 1\u0663))", "prop.vnnlib:9: bad number '1\u0663'")])
def test_non_ascii_digits_are_not_read_as_ascii_ones(tmp_path, text, match):
    """Python's \\d and int() accept other scripts' digits: X_1\u0663 once read as X_13."""
    with pytest.raises(VnnlibError, match=match):
        read_vnnlib(write(tmp_path, BOX + text + "\n"))


def test_constant_of_undefined_data_type(tmp_path):
    constant = helper.make_node("Constant", [], ["c"], name="k",
                                value=numpy_helper.from_array(np.ones(3, np.float32), "c_value"))
    model = make_model([constant, helper.make_node("Add", ["x", "c"], ["y"])], ["N", 3])
    model.graph.node[0].attribute[0].t.data_type = 99
    with pytest.raises(ModelError, match="tensor 'c_value' has data type 99"):
        load_onnx(save(model, tmp_path))


def test_conv_without_spatial_axes(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Gemm", ["h", "w"], ["y"], name="fc")]
    model = make_model(nodes, ["N", 3], initializers={"w": np.ones((3, 2), np.float32)})
    model.graph.node[1].op_type = "Conv"
    model.opset_import[0].version = 1      # Relu-1 infers no shape, so ONNX never sees the Conv's rank
    with pytest.raises(UnsupportedOperatorError, match="Conv: the kernel has no spatial axes") as caught:
        load_onnx(save(model, tmp_path))
    assert caught.value.node == "fc"


def test_string_attribute_that_is_not_utf8(tmp_path):
    nodes = [helper.make_node("Pad", ["x", "pads"], ["y"], name="pad", mode="edge")]
    model = make_model(nodes, [1, 1, 4, 4], initializers={"pads": np.zeros(8, np.int64)})
    model.graph.node[0].attribute[0].s = b"ed\xf4e"
    with pytest.raises(UnsupportedOperatorError, match="Pad: attribute mode is not valid UTF-8") as caught:
        load_onnx(save(model, tmp_path))
    assert caught.value.node == "pad"


@pytest.mark.parametrize("alpha", [np.nan, np.inf])
def test_non_finite_float_attribute(tmp_path, alpha):
    nodes = [helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", alpha=1.0)]
    model = make_model(nodes, ["N", 3], initializers={"w": np.ones((3, 2), np.float32)})
    model.graph.node[0].attribute[0].f = alpha
    with pytest.raises(InvalidWeightsError, match="attribute 'alpha' is NaN or infinite") as caught:
        load_onnx(save(model, tmp_path))
    assert caught.value.node == "fc"


def test_chunks_keep_the_text_and_end_at_line_ends():
    text = "(a ; comment\n b)\n\n(c)\nlast"
    pieces = list(chunks(text, size=3))
    assert "".join(pieces) == text and all(p.endswith("\n") for p in pieces[:-1]) and len(pieces) > 2


def test_error_line_past_the_first_chunk(tmp_path):
    """Tokenized a chunk of lines at a time (a 60 MB file with an error on line 4 once took
    seconds): line numbers must run on across chunks."""
    filler = "; a comment that pads the file\n(assert (<= Y_0 1))\n" * 25_000     # > 1 MB
    path = write(tmp_path, BOX + filler + "(assert (<= Y_0 1)))\n")
    with pytest.raises(VnnlibError, match=rf"prop.vnnlib:{9 + 50_000}: unbalanced parentheses"):
        read_vnnlib(path)
