"""Mutations of ONNX models: raw bytes (flips, truncation, splices) and structure, edited through
the onnx protobuf API (attributes, shapes, initialisers, wiring, operators, opsets).

Why structured mutations: a byte flip mostly lands in weight data and loads fine, or breaks the
protobuf framing and is refused at once; the reader's deeper checks are only reached by models
that still parse but are wrong in one specific way.
"""
from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

OPERATORS = ["Add", "Sub", "Mul", "Div", "MatMul", "Gemm", "Relu", "Sigmoid", "Tanh", "Softmax",
             "Conv", "MaxPool", "AveragePool", "BatchNormalization", "Flatten", "Reshape",
             "Transpose", "Squeeze", "Unsqueeze", "Concat", "Pad", "Identity", "Dropout", "Constant"]
UNSUPPORTED = ["Cos", "LSTM", "If", "Loop", "Shape", "Gather", "Where", "NoSuchOp", ""]
ATTRIBUTE_NAMES = ["axis", "axes", "perm", "group", "transA", "transB", "alpha", "beta", "epsilon",
                   "kernel_shape", "pads", "strides", "dilations", "auto_pad", "ceil_mode", "mode",
                   "allowzero", "count_include_pad", "value", "shape", "training_mode", "value_float",
                   "value_ints", "storage_order", "keepdims"]
INTS = [-(2 ** 40), -3, -1, 0, 1, 2, 3, 7, 2 ** 31, 2 ** 62]
FLOATS = [float("nan"), float("inf"), -float("inf"), 0.0, -1.0, 0.5, 1e30, 1e-30]
STRINGS = [b"", b"SAME_UPPER", b"VALID", b"NOTSET", b"reflect", b"wrap", b"garbage\x00", b"\xff\xfe"]
DATA_TYPES = [TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16,
              TensorProto.INT64, TensorProto.INT32, TensorProto.INT8, TensorProto.UINT8,
              TensorProto.BOOL, TensorProto.STRING, TensorProto.COMPLEX64, TensorProto.UNDEFINED,
              TensorProto.FLOAT8E4M3FN, TensorProto.INT4, 99]
OPSETS = [-1, 0, 1, 6, 7, 9, 10, 11, 12, 13, 17, 18, 21, 22, 99, 10 ** 9]
NAMES = ["", "nowhere", "x", "y"]


# ----- bytes ---------------------------------------------------------------------------------
def flip_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    buffer = bytearray(data)
    count = rng.choice([1, 2, 4, 16, 64])
    for _ in range(count):
        buffer[rng.randrange(len(buffer))] ^= 1 << rng.randrange(8)
    return bytes(buffer), f"{count} bit flip(s)"


def truncate_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    length = rng.choice([0, 1, rng.randrange(len(data)), len(data) - 1])
    return data[:length], f"truncated to {length} of {len(data)} bytes"


def splice_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Overwrite, insert or delete a short random span."""
    start, length = rng.randrange(len(data)), rng.choice([1, 4, 16, 256])
    noise = bytes(rng.randrange(256) for _ in range(length))
    how = rng.choice(["overwrite", "insert", "delete"])
    if how == "overwrite":
        return data[:start] + noise + data[start + length:], f"{length} bytes overwritten at {start}"
    if how == "insert":
        return data[:start] + noise + data[start:], f"{length} bytes inserted at {start}"
    return data[:start] + data[start + length:], f"{length} bytes deleted at {start}"


BYTE_MUTATORS = [flip_bytes, truncate_bytes, splice_bytes]


# ----- attributes ----------------------------------------------------------------------------
def random_attribute(name: str, rng: random.Random, kind: int | None = None) -> AttributeProto:
    """An attribute of the given (or a random) type holding an edge-case value."""
    kind = kind if kind is not None else rng.choice([AttributeProto.INT, AttributeProto.INTS,
                                                     AttributeProto.FLOAT, AttributeProto.FLOATS,
                                                     AttributeProto.STRING, AttributeProto.TENSOR,
                                                     AttributeProto.GRAPH])
    if kind == AttributeProto.INT:
        return helper.make_attribute(name, rng.choice(INTS))
    if kind == AttributeProto.INTS:
        return helper.make_attribute(name, [rng.choice(INTS) for _ in range(rng.choice([0, 1, 2, 4, 5]))],
                                     attr_type=AttributeProto.INTS)
    if kind == AttributeProto.FLOAT:
        return helper.make_attribute(name, rng.choice(FLOATS))
    if kind == AttributeProto.FLOATS:
        return helper.make_attribute(name, [rng.choice(FLOATS) for _ in range(rng.choice([0, 1, 3]))],
                                     attr_type=AttributeProto.FLOATS)
    if kind == AttributeProto.STRING:
        return helper.make_attribute(name, rng.choice(STRINGS))
    if kind == AttributeProto.TENSOR:
        return helper.make_attribute(name, random_tensor(name, rng))
    return helper.make_attribute(name, helper.make_graph([], "empty", [], []))


def random_tensor(name: str, rng: random.Random) -> TensorProto:
    shape = rng.choice([(), (0,), (1,), (3,), (2, 2), (1, 1, 1, 1)])
    dtype = rng.choice([np.float32, np.float64, np.int64, np.int32, np.bool_])
    values = np.asarray(np.random.default_rng(rng.randrange(2 ** 32)).integers(-3, 4, size=shape), dtype=dtype)
    return numpy_helper.from_array(values, name)


def node_with_attributes(model: onnx.ModelProto, rng: random.Random) -> onnx.NodeProto | None:
    """A node that has attributes to edit, or None when the graph has none."""
    nodes = [n for n in model.graph.node if n.attribute]
    return rng.choice(nodes) if nodes else None


def change_attribute_value(model: onnx.ModelProto, rng: random.Random) -> str | None:
    """Same name and type, an edge-case value (INTS also grow, shrink or lose an element)."""
    node = node_with_attributes(model, rng)
    if node is None:
        return None
    index = rng.randrange(len(node.attribute))
    old = node.attribute[index]
    new = random_attribute(old.name, rng, old.type if old.type != AttributeProto.UNDEFINED else None)
    if old.type == AttributeProto.INTS and old.ints and rng.random() < 0.5:
        new = helper.make_attribute(old.name, list(old.ints), attr_type=AttributeProto.INTS)
        new.ints[rng.randrange(len(new.ints))] = rng.choice(INTS)
    node.attribute[index].CopyFrom(new)
    return f"node '{node.name}' ({node.op_type}): attribute '{old.name}' value changed"


def nudge_attribute(model: onnx.ModelProto, rng: random.Random) -> str | None:
    """A small, well-typed change (an int or one list entry moved by one, a float negated or
    zeroed): such a model still passes the ONNX checker, so the operators' own checks see it."""
    node = node_with_attributes(model, rng)
    if node is None:
        return None
    attribute = rng.choice(node.attribute)
    if attribute.type == AttributeProto.INT:
        attribute.i = rng.choice([attribute.i - 1, attribute.i + 1, 0, 1, -1])
    elif attribute.type == AttributeProto.INTS and attribute.ints:
        attribute.ints[rng.randrange(len(attribute.ints))] += rng.choice([-2, -1, 1, 2])
    elif attribute.type == AttributeProto.FLOAT:
        attribute.f = rng.choice([-attribute.f, 0.0, 2 * attribute.f])
    else:
        return None
    return f"node '{node.name}' ({node.op_type}): attribute '{attribute.name}' nudged"


def change_attribute_type(model: onnx.ModelProto, rng: random.Random) -> str | None:
    node = node_with_attributes(model, rng)
    if node is None:
        return None
    index = rng.randrange(len(node.attribute))
    name = node.attribute[index].name
    node.attribute[index].CopyFrom(random_attribute(name, rng))
    return f"node '{node.name}' ({node.op_type}): attribute '{name}' type changed"


def add_or_remove_attribute(model: onnx.ModelProto, rng: random.Random) -> str | None:
    node = rng.choice(model.graph.node)
    if node.attribute and rng.random() < 0.4:
        removed = node.attribute.pop(rng.randrange(len(node.attribute)))
        return f"node '{node.name}' ({node.op_type}): attribute '{removed.name}' removed"
    name = rng.choice(ATTRIBUTE_NAMES)
    node.attribute.append(random_attribute(name, rng))
    return f"node '{node.name}' ({node.op_type}): attribute '{name}' added"


# ----- shapes and initialisers ---------------------------------------------------------------
def change_dims(model: onnx.ModelProto, rng: random.Random) -> str | None:
    """A dims entry of an initializer, or of a declared input / output / value_info shape."""
    graph = model.graph
    if graph.initializer and rng.random() < 0.5:
        tensor = rng.choice(graph.initializer)
        dims = list(tensor.dims)
        edit_dims(dims, rng)
        del tensor.dims[:]
        tensor.dims.extend(dims)
        return f"initializer '{tensor.name}': dims -> {dims}"
    infos = list(graph.input) + list(graph.output) + list(graph.value_info)
    info = rng.choice(infos)
    shape = info.type.tensor_type.shape
    if shape.dim and rng.random() < 0.3:
        dim = rng.choice(shape.dim)
        dim.dim_param = rng.choice(["N", "", "batch"])
        return f"'{info.name}': a dim made symbolic"
    dims = [d.dim_value for d in shape.dim]
    edit_dims(dims, rng)
    shape.ClearField("dim")
    for value in dims:
        shape.dim.add().dim_value = value
    return f"'{info.name}': shape -> {dims}"


def edit_dims(dims: list[int], rng: random.Random) -> None:
    how = rng.choice(["value", "value", "append", "remove", "clear"])
    if how == "value" and dims:
        dims[rng.randrange(len(dims))] = rng.choice([0, 1, 2, 3, -1, 2 ** 31, 2 ** 40])
    elif how == "remove" and dims:
        dims.pop(rng.randrange(len(dims)))
    elif how == "clear":
        dims.clear()
    else:
        dims.insert(rng.randrange(len(dims) + 1), rng.choice([1, 2, 0]))


def reshape_initializer(model: onnx.ModelProto, rng: random.Random) -> str | None:
    """A valid tensor of another shape (or type) in place of an initializer or a Constant's value:
    data and dims agree."""
    tensors = data_tensors(model)
    if not tensors:
        return None
    tensor = rng.choice(tensors)
    values = numpy_helper.to_array(tensor).reshape(-1)
    how = rng.choice(["transposed", "flat", "truncated", "scalar", "integer"])
    shaped = {"transposed": lambda v: v.reshape(tuple(tensor.dims)).T, "flat": lambda v: v,
              "truncated": lambda v: v[: max(v.size - 1, 0)], "scalar": lambda v: v[:1].reshape(()),
              "integer": lambda v: v.reshape(tuple(tensor.dims)).astype(np.int64)}[how]
    tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(shaped(values)), tensor.name))
    return f"initializer '{tensor.name}' {how}"


def data_tensors(model: onnx.ModelProto) -> list[TensorProto]:
    """The initializers and the tensors held by node attributes (Constant values)."""
    graph = model.graph
    return list(graph.initializer) + [a.t for n in graph.node for a in n.attribute if a.HasField("t")]


def change_initializer_data(model: onnx.ModelProto, rng: random.Random) -> str | None:
    """Wrong-sized, NaN, empty, retyped, or externally stored tensor data."""
    tensors = data_tensors(model)
    if not tensors:
        return None
    tensor = rng.choice(tensors)
    how = rng.choice(["shorter", "longer", "nan", "empty", "data_type", "typed_field", "external"])
    if how == "nan" and tensor.data_type == TensorProto.FLOAT and tensor.raw_data:
        values = np.frombuffer(tensor.raw_data, dtype=np.float32).copy()
        values[rng.randrange(values.size)] = rng.choice([np.nan, np.inf, -np.inf])
        tensor.raw_data = values.tobytes()
    elif how in ("shorter", "longer", "nan", "empty"):
        raw = tensor.raw_data
        tensor.raw_data = {"shorter": raw[: max(len(raw) // 2 - 1, 0)], "longer": raw + b"\x00\x00\x80\x7f",
                           "nan": b"", "empty": b""}[how]
    elif how == "data_type":
        tensor.data_type = rng.choice(DATA_TYPES)
    elif how == "typed_field":
        tensor.ClearField("raw_data")
        tensor.float_data.extend([rng.choice(FLOATS) for _ in range(rng.choice([0, 1, 5]))])
    else:
        tensor.data_location = TensorProto.EXTERNAL
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", rng.choice(["", "missing.bin", "../outside.bin", "/etc/hostname", "."])
    return f"tensor '{tensor.name}': data {how}"


# ----- wiring --------------------------------------------------------------------------------
def tensor_names(model: onnx.ModelProto) -> list[str]:
    graph = model.graph
    return ([i.name for i in graph.input] + [t.name for t in graph.initializer]
            + [o for n in graph.node for o in n.output])


def rewire_input(model: onnx.ModelProto, rng: random.Random) -> str | None:
    """A node input to a nonexistent tensor, to '' (omitted), or to another tensor (maybe later)."""
    nodes = [n for n in model.graph.node if n.input]
    if not nodes:
        return None
    node = rng.choice(nodes)
    if rng.random() < 0.1:
        del node.input[1 if rng.random() < 0.5 else 0:]
        return f"node '{node.name}' ({node.op_type}): inputs cut to {len(node.input)}"
    position = rng.randrange(len(node.input))
    new = rng.choice(NAMES + tensor_names(model))
    node.input[position] = new
    return f"node '{node.name}' ({node.op_type}): input {position} -> '{new}'"


def rewire_output(model: onnx.ModelProto, rng: random.Random) -> str | None:
    """A node output renamed (maybe onto an existing tensor), or a graph output moved."""
    graph = model.graph
    if rng.random() < 0.1:
        node = rng.choice(graph.node)
        del node.output[:]
        return f"node '{node.name}' ({node.op_type}): outputs removed"
    if rng.random() < 0.5:
        node = rng.choice(graph.node)
        new = rng.choice(NAMES + tensor_names(model))
        node.output[:1] = [new]
        return f"node '{node.name}' ({node.op_type}): output -> '{new}'"
    output = rng.choice(graph.output)
    new = rng.choice(NAMES + tensor_names(model))
    output.name = new
    return f"graph output -> '{new}'"


def change_node_list(model: onnx.ModelProto, rng: random.Random) -> str | None:
    """Delete, duplicate or move a node."""
    nodes = model.graph.node
    index = rng.randrange(len(nodes))
    how = rng.choice(["delete", "duplicate", "move"])
    name = f"'{nodes[index].name}' ({nodes[index].op_type})"
    if how == "delete":
        del nodes[index]
    elif how == "duplicate":
        nodes.insert(rng.randrange(len(nodes) + 1), nodes[index])
    else:
        node = onnx.NodeProto()
        node.CopyFrom(nodes[index])
        del nodes[index]
        nodes.insert(rng.randrange(len(nodes) + 1), node)
    return f"node {name} {how}d"


def change_graph_ports(model: onnx.ModelProto, rng: random.Random) -> str | None:
    """Duplicate, drop or add graph outputs and inputs; retype an input."""
    graph = model.graph
    how = rng.choice(["duplicate_output", "extra_output", "no_output", "duplicate_input",
                      "no_input", "extra_input", "input_type"])
    if how == "duplicate_output":
        graph.output.append(graph.output[0])
    elif how == "extra_output":
        graph.output.append(helper.make_tensor_value_info(rng.choice(tensor_names(model)), TensorProto.FLOAT, None))
    elif how == "no_output":
        del graph.output[:]
    elif how == "duplicate_input":
        graph.input.append(graph.input[0])
    elif how == "no_input":
        del graph.input[:]
    elif how == "extra_input":
        graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1, 2]))
    else:
        graph.input[0].type.tensor_type.elem_type = rng.choice(DATA_TYPES)
    return f"graph ports: {how}"


# ----- operators and opsets ------------------------------------------------------------------
def change_op_type(model: onnx.ModelProto, rng: random.Random) -> str | None:
    node = rng.choice(model.graph.node)
    old = node.op_type
    if rng.random() < 0.15:
        node.domain = rng.choice(["com.microsoft", "ai.onnx.ml", "x"])
        return f"node '{node.name}' ({old}): domain -> '{node.domain}'"
    node.op_type = rng.choice(OPERATORS + UNSUPPORTED)
    return f"node '{node.name}': op_type {old} -> '{node.op_type}'"


SIMILAR_OPERATORS = [["Relu", "Sigmoid", "Tanh", "Identity", "Softmax", "Dropout", "Flatten"],
                     ["Add", "Sub", "Mul", "Div", "MatMul"], ["MaxPool", "AveragePool"],
                     ["Gemm", "MatMul", "Conv"], ["Squeeze", "Unsqueeze", "Reshape", "Flatten"]]


def swap_similar_operator(model: onnx.ModelProto, rng: random.Random) -> str | None:
    """An operator taking the same inputs: the model may still pass the checker."""
    candidates = [(n, g) for n in model.graph.node for g in SIMILAR_OPERATORS if n.op_type in g]
    if not candidates:
        return None
    node, group = rng.choice(candidates)
    old, node.op_type = node.op_type, rng.choice(group)
    return f"node '{node.name}': op_type {old} -> {node.op_type}"


def change_opset(model: onnx.ModelProto, rng: random.Random) -> str | None:
    how = rng.choice(["version", "version", "duplicate", "remove", "ir_version"])
    if how == "version" and model.opset_import:
        model.opset_import[0].version = rng.choice(OPSETS)
    elif how == "duplicate":
        model.opset_import.append(helper.make_opsetid("", rng.choice(OPSETS)))
    elif how == "remove":
        del model.opset_import[:]
    else:
        model.ir_version = rng.choice([0, 1, 3, 7, 8, 10, 11, 99])
    return f"opset: {how}"


def add_constant_node(model: onnx.ModelProto, rng: random.Random) -> str | None:
    """A Constant node with an odd attribute feeding a random node input."""
    name = f"fuzz_constant_{rng.randrange(100)}"
    attribute = random_attribute(rng.choice(["value", "value_float", "value_ints", "sparse_value", "bogus"]), rng)
    constant = helper.make_node("Constant", [], [name], name=name)
    constant.attribute.append(attribute)
    model.graph.node.insert(0, constant)
    target = rng.choice(model.graph.node[1:])
    if target.input:
        target.input[rng.randrange(len(target.input))] = name
    return f"Constant ({attribute.name}) feeding node '{target.name}' ({target.op_type})"


STRUCTURE_MUTATORS: list[Callable[[onnx.ModelProto, random.Random], str | None]] = [
    change_attribute_value, nudge_attribute, nudge_attribute, change_attribute_type,
    add_or_remove_attribute, change_dims, reshape_initializer, change_initializer_data, rewire_input,
    rewire_output, change_node_list, change_graph_ports, change_op_type, swap_similar_operator,
    swap_similar_operator, change_opset, add_constant_node]


def mutate_onnx(data: bytes, model: onnx.ModelProto, rng: random.Random) -> tuple[bytes, str]:
    """A mutated copy of a model: 30 % of the time its bytes, else 1-3 structural edits."""
    if rng.random() < 0.3:
        return rng.choice(BYTE_MUTATORS)(data, rng)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    done = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        if not copy.graph.node or not copy.graph.output or not copy.graph.input:
            break
        try:
            what = rng.choice(STRUCTURE_MUTATORS)(copy, rng)
        except (ValueError, TypeError, IndexError, KeyError, onnx.checker.ValidationError):
            continue        # an earlier edit left nothing this one can work on (data that no longer
                            # fits, or that is now "external")
        if what is not None:
            done.append(what)
    return copy.SerializeToString(), "; ".join(done) or "unchanged"
