"""Read an ONNX file into the project's network model, validating everything before any solving.

Order of checks: the file itself (exists, parses, external data stays in the model's folder), the
graph's wiring (every tensor is produced somewhere), the ONNX checker and strict shape inference,
the weights (finite), then each operator (supported, in a supported form). Constant subgraphs are
folded, so the model holds only operators that act on the network's input.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import external_data_helper, helper, numpy_helper

from .errors import (ExternalDataError, InvalidWeightsError, MissingInitializerError, ModelError,
                     SmtVerifyError, UnsupportedOperatorError)
from .network import Layer, Network
from .ops import REGISTRY, NodeSpec

_FOLD_SEED = 20170724   # fixed: the batch check below must be deterministic


def load_onnx(path: str | Path, strict: bool = True) -> Network:
    """Load and validate a model. With strict=False, unsupported operators are collected in
    `network.problems` instead of raised (for `smtverify info`)."""
    path = Path(path)
    model = _read(path)
    graph = model.graph
    _check_wiring(model, path)
    _check_model(model, path)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    constants = _constants(model, path)
    input_name, input_shape, native = _the_input(model, path)
    if len(graph.output) != 1:
        raise ModelError(f"the network must have exactly one output; it has {len(graph.output)}", file=path)
    output_name = graph.output[0].name
    consumers = _consumer_counts(model)
    layers, problems = [], []
    for node in graph.node:
        if node.op_type == "Constant":
            continue
        spec = _spec(node, constants, opset, path, consumers, output_name)
        operator = _build(spec, problems, strict)
        if operator is not None and len(spec.constants) == len([i for i in node.input if i]):
            constants[node.output[0]] = _fold(operator, spec, path)
            continue
        sources = tuple(None if (i in spec.constants or not name) else name for i, name in enumerate(spec.inputs))
        layers.append(Layer(spec.name, node.op_type, node.name, operator, sources, spec.constants))
    if output_name in constants:
        raise ModelError("the output does not depend on the input", file=path, node=output_name)
    network = Network(str(path), input_name, input_shape, native, layers, output_name, opset, problems)
    if problems:
        _shapes_from_inference(model, network)
    else:
        _infer_shapes(network)
        network.batchable = _batch_is_safe(network)
    return network


# ----- the file ------------------------------------------------------------------------------
def _read(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise ModelError("no such file", file=path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:   # protobuf raises its own DecodeError types
        raise ModelError(f"not a readable ONNX model (malformed or truncated): {error}", file=path) from None
    if not model.graph.node:
        raise ModelError("the model has no nodes (empty, truncated or not an ONNX file)", file=path)
    _load_external_data(model, path)
    return model


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    folder = path.resolve().parent
    tensors = [t for t in external_data_helper._get_all_tensors(model) if external_data_helper.uses_external_data(t)]
    for tensor in tensors:
        location = {e.key: e.value for e in tensor.external_data}.get("location", "")
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(folder):
            raise ExternalDataError(f"tensor '{tensor.name}' keeps its data at '{location}', outside the "
                                    "model's folder; refused", file=path)
        if not target.is_file():
            raise ExternalDataError(f"tensor '{tensor.name}': external data file '{location}' is missing",
                                    file=path)
    if tensors:
        external_data_helper.load_external_data_for_model(model, str(folder))


# ----- the graph -----------------------------------------------------------------------------
def _check_wiring(model: onnx.ModelProto, path: Path) -> None:
    """Every node input must be a graph input, an initializer or an earlier node's output."""
    known = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        for name in node.input:
            if name and name not in known:
                raise MissingInitializerError(
                    f"{node.op_type} reads '{name}', which no input, initializer or earlier node provides",
                    file=path, node=node.name or node.output[0])
        known.update(node.output)
    for output in model.graph.output:
        if output.name not in known:
            raise ModelError(f"graph output '{output.name}' is produced by no node", file=path)


def _check_model(model: onnx.ModelProto, path: Path) -> None:
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as error:
        raise ModelError(f"ONNX checker: {_first_line(error)}", file=path) from None
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as error:   # onnx raises InferenceError and others from C++
        raise ModelError(f"ONNX shape inference: {_first_line(error)}", file=path) from None


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _constants(model: onnx.ModelProto, path: Path) -> dict[str, np.ndarray]:
    users: dict[str, str] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, node.name or node.output[0])
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = _constant_value(node, path)
    for name, value in values.items():
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            bad = int(np.size(value) - np.isfinite(value).sum())
            raise InvalidWeightsError(f"tensor '{name}' holds {bad} NaN or infinite value(s)",
                                      file=path, node=users.get(name, name))
    return values


def _constant_value(node: onnx.NodeProto, path: Path) -> np.ndarray:
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        if attribute.name == "value":
            return numpy_helper.to_array(value)
        if attribute.name in ("value_float", "value_floats"):
            return np.asarray(value, dtype=np.float32)
        if attribute.name in ("value_int", "value_ints"):
            return np.asarray(value, dtype=np.int64)
    raise UnsupportedOperatorError("Constant: only value, value_float(s) and value_int(s) are supported",
                                   file=path, node=node.name or node.output[0])


def _the_input(model: onnx.ModelProto, path: Path) -> tuple[str, tuple[int, ...], bool]:
    """The one data input, its shape for one input, and whether its first axis is the batch."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelError(f"the network must have exactly one input; it has {len(inputs)}: "
                         f"{[i.name for i in inputs]}", file=path)
    tensor = inputs[0]
    if not tensor.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
        raise ModelError(f"input '{tensor.name}' must be float, not "
                         f"{onnx.TensorProto.DataType.Name(tensor.type.tensor_type.elem_type)}", file=path)
    dims = list(tensor.type.tensor_type.shape.dim)
    if not dims:
        raise ModelError(f"input '{tensor.name}' has no declared shape", file=path)
    sizes = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    native = len(sizes) >= 2 and sizes[0] in (None, 1)
    for axis, size in enumerate(sizes):
        if size is None and not (axis == 0 and native):
            raise ModelError(f"input '{tensor.name}' axis {axis} is symbolic; only the batch axis may be",
                             file=path)
    return tensor.name, tuple(sizes[1:] if native else sizes), native


def _consumer_counts(model: onnx.ModelProto) -> set[str]:
    used = {name for node in model.graph.node for name in node.input}
    return used | {o.name for o in model.graph.output}


# ----- operators -----------------------------------------------------------------------------
def _spec(node: onnx.NodeProto, constants: dict[str, np.ndarray], opset: int, path: Path,
          used: set[str], output_name: str) -> NodeSpec:
    return NodeSpec(
        name=node.output[0],
        op_type=node.op_type,
        attrs={a.name: helper.get_attribute_value(a) for a in node.attribute},
        inputs=list(node.input),
        constants={i: constants[n] for i, n in enumerate(node.input) if n in constants},
        opset=opset,
        file=str(path),
        n_outputs_used=1 + sum(1 for o in node.output[1:] if o in used),
        extra={"is_output": node.output[0] == output_name, "domain": node.domain},
    )


def _build(spec: NodeSpec, problems: list[SmtVerifyError], strict: bool):
    try:
        if spec.extra["domain"] not in ("", "ai.onnx") or spec.op_type not in REGISTRY:
            domain = f" (domain '{spec.extra['domain']}')" if spec.extra["domain"] else ""
            raise UnsupportedOperatorError(
                f"operator '{spec.op_type}'{domain} is not supported; supported: {', '.join(sorted(REGISTRY))}",
                file=spec.file, node=spec.name)
        return REGISTRY[spec.op_type](spec)
    except UnsupportedOperatorError as error:
        if strict:
            raise
        problems.append(error)
        return None


def _fold(operator, spec: NodeSpec, path: Path) -> np.ndarray:
    args = [spec.constants.get(i) for i in range(len(spec.inputs))]
    try:
        return np.asarray(operator.execute(args))
    except (ValueError, IndexError) as error:
        raise ModelError(f"{spec.op_type} on constants failed: {error}", file=path, node=spec.name) from None


# ----- shapes and batching -------------------------------------------------------------------
def _infer_shapes(network: Network) -> None:
    """Run one all-zero input exactly as ONNX would, recording each layer's shape."""
    x = np.zeros(((1,) if network.native_batch else ()) + network.input_shape)
    values = {network.input_name: x}
    for layer in network.order:
        args = [values[s] if s is not None else c for s, c in zip(layer.sources, layer.constant_args(np.dtype(np.float64)))]
        try:
            out = np.asarray(layer.operator.execute(args))
        except SmtVerifyError:
            raise
        except (ValueError, IndexError, TypeError) as error:
            raise ModelError(f"{layer.op_type} cannot run on its input shapes {[list(np.shape(a)) for a in args if a is not None]}: {error}",
                             file=network.path, node=layer.name) from None
        values[layer.name] = out
        layer.shape = tuple(out.shape[1:]) if network.native_batch else tuple(out.shape)
        if network.native_batch and out.shape[:1] == (1,) and layer.op_type == "Reshape" \
                and all(np.shape(values[s])[:1] == (1,) for s in layer.sources if s is not None):
            layer.operator.sample_shape = layer.shape


def _shapes_from_inference(model: onnx.ModelProto, network: Network) -> None:
    """Layer shapes from ONNX's own shape inference, for a model that cannot run here."""
    inferred = onnx.shape_inference.infer_shapes(model)
    for info in list(inferred.graph.value_info) + list(inferred.graph.output):
        layer = network.layers.get(info.name)
        if layer is not None and info.type.tensor_type.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim]
            if None not in dims[int(network.native_batch):]:
                layer.shape = tuple(dims[int(network.native_batch):])


def _batch_is_safe(network: Network) -> bool:
    """True when running a batch gives each input exactly what running it alone gives."""
    rng = np.random.default_rng(_FOLD_SEED)
    batch = rng.uniform(-1.0, 1.0, size=(3,) + network.input_shape)
    try:
        together = network._run_batch(batch, np.dtype(np.float64), "output")[network.output_name]
    except (ValueError, IndexError, TypeError):
        return False
    network.batchable = False
    alone = network.run(batch, np.float64, keep="output")[network.output_name]
    network.batchable = True
    return together.shape == alone.shape and bool(np.allclose(together, alone, rtol=1e-9, atol=1e-9))
