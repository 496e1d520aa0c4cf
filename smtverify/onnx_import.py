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
from google.protobuf.message import DecodeError, Message
from onnx import external_data_helper, helper, numpy_helper

from .errors import (ExternalDataError, InvalidWeightsError, MissingInitializerError, ModelError,
                     SmtVerifyError, UnsupportedOperatorError)
from .network import Layer, Network
from .ops import REGISTRY, NodeSpec

_FOLD_SEED = 20170724   # fixed: the batch check below must be deterministic
# Import runs the network on a few inputs in float64; 2^24 values per tensor (a 4096x4096 image) is
# ample for verification and keeps that within a few hundred megabytes.
MAX_TENSOR_ELEMENTS = 1 << 24


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
    _check_float_attributes(model, path)
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
        raise ModelError("is a folder, not a file" if path.is_dir() else "no such file", file=path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except DecodeError as error:
        raise ModelError(f"not a readable ONNX model (malformed or truncated): {error}", file=path) from None
    if not model.graph.node:
        raise ModelError("the model has no nodes (empty, truncated or not an ONNX file)", file=path)
    bad_text = _invalid_text(model)
    if bad_text is not None:
        raise ModelError("text that is not valid UTF-8 (a corrupted file?)", file=path, field=bad_text)
    _load_external_data(model, path)
    return model


def _invalid_text(message: Message, where: str = "") -> str | None:
    """The first string field holding bytes that are not UTF-8, as a dotted path. ONNX's protobuf
    schema does not validate them: Python gets `bytes` instead of `str` and the checker fails to
    decode its own message."""
    for field, value in message.ListFields():
        name = f"{where}.{field.name}" if where else field.name
        if field.type == field.TYPE_STRING:
            if any(isinstance(text, bytes) for text in ([value] if isinstance(value, (str, bytes)) else value)):
                return name
        elif field.type == field.TYPE_MESSAGE:
            for item in [value] if isinstance(value, Message) else value:
                found = _invalid_text(item, name)
                if found is not None:
                    return found
    return None


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
def _label(node: onnx.NodeProto) -> str:
    """How errors name a node: its own name, else (many exporters leave it empty) its output's."""
    return node.name or (node.output[0] if node.output else f"<unnamed {node.op_type}>")


def _check_wiring(model: onnx.ModelProto, path: Path) -> None:
    """Every node has an output, and every node input is a graph input, an initializer or an earlier
    node's output."""
    known = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        if not node.output or not node.output[0]:
            raise ModelError(f"{node.op_type} has no output", file=path, node=_label(node))
        for name in node.input:
            if name and name not in known:
                raise MissingInitializerError(
                    f"{node.op_type} reads '{name}', which no input, initializer or earlier node provides",
                    file=path, node=_label(node))
        known.update(node.output)
    for output in model.graph.output:
        if output.name not in known:
            raise ModelError(f"graph output '{output.name}' is produced by no node", file=path)


def _check_data_types(model: onnx.ModelProto, path: Path) -> None:
    """Every tensor's type is one ONNX defines, and not UNDEFINED: shape inference fails with a bare
    ValueError on those, and the checker lets them through."""
    graph = model.graph
    known = set(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}
    tensors = list(graph.initializer) + [a.t for n in graph.node for a in n.attribute if a.HasField("t")]
    typed = [(t.name, t.data_type) for t in tensors] + [
        (i.name, i.type.tensor_type.elem_type) for i in list(graph.input) + list(graph.output) + list(graph.value_info)
        if i.type.HasField("tensor_type")]
    for name, data_type in typed:
        if data_type not in known:
            raise ModelError(f"tensor '{name}' has data type {data_type}, which ONNX does not define", file=path)


def _check_model(model: onnx.ModelProto, path: Path) -> None:
    _check_data_types(model, path)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as error:
        raise ModelError(f"ONNX checker: {_first_line(error)}", file=path) from None
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except onnx.shape_inference.InferenceError as error:
        raise ModelError(f"ONNX shape inference: {_first_line(error)}", file=path) from None
    _check_sizes(inferred, path)


def _check_sizes(inferred: onnx.ModelProto, path: Path) -> None:
    """No activation may exceed MAX_TENSOR_ELEMENTS values: import runs the network, and a mutated
    pad or shape would otherwise ask numpy for hundreds of gigabytes before anything could say why.
    (Weights may be larger: they are read as stored.)"""
    graph = inferred.graph
    producers = {output: _label(node) for node in graph.node for output in node.output}
    weights = {t.name for t in graph.initializer}
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        if info.name in weights:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in info.type.tensor_type.shape.dim]
        if np.prod(dims, dtype=object) > MAX_TENSOR_ELEMENTS:
            raise ModelError(f"tensor '{info.name}' would have shape {dims}: more than {MAX_TENSOR_ELEMENTS} "
                             "values, beyond any network smtverify can verify", file=path,
                             node=producers.get(info.name))


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _constants(model: onnx.ModelProto, path: Path) -> dict[str, np.ndarray]:
    users: dict[str, str] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, _label(node))
    values = {t.name: _tensor_value(t, path, users.get(t.name, t.name)) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = _constant_value(node, path)
    for name, value in values.items():
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            bad = int(np.size(value) - np.isfinite(value).sum())
            raise InvalidWeightsError(f"tensor '{name}' holds {bad} NaN or infinite value(s)",
                                      file=path, node=users.get(name, name))
    return values


def _check_float_attributes(model: onnx.ModelProto, path: Path) -> None:
    """Float attributes (Gemm's alpha, a Pad value, an epsilon) act like weights: NaN or infinity
    there is as wrong as in a weight tensor."""
    for node in model.graph.node:
        for attribute in node.attribute:
            values = [attribute.f] if attribute.type == onnx.AttributeProto.FLOAT else list(attribute.floats)
            if not np.all(np.isfinite(values)):
                raise InvalidWeightsError(f"attribute '{attribute.name}' is NaN or infinite", file=path,
                                          node=_label(node))


def _tensor_value(tensor: onnx.TensorProto, path: Path, node: str) -> np.ndarray:
    """The tensor as an array. The ONNX checker does not compare a tensor's data with its dims and
    type, so numpy_helper meets the mismatch first; it is named here."""
    try:
        return numpy_helper.to_array(tensor)
    except (ValueError, TypeError) as error:
        kind = onnx.TensorProto.DataType.Name(tensor.data_type)
        raise ModelError(f"tensor '{tensor.name}': its data does not fit its dims {list(tensor.dims)} "
                         f"and type {kind}: {error}", file=path, node=node) from None


def _constant_value(node: onnx.NodeProto, path: Path) -> np.ndarray:
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        if attribute.name == "value":
            return _tensor_value(value, path, _label(node))
        if attribute.name in ("value_float", "value_floats"):
            return np.asarray(value, dtype=np.float32)
        if attribute.name in ("value_int", "value_ints"):
            return np.asarray(value, dtype=np.int64)
    raise UnsupportedOperatorError("Constant: only value, value_float(s) and value_int(s) are supported",
                                   file=path, node=_label(node))


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
        if size is not None and size < 1:
            raise ModelError(f"input '{tensor.name}' axis {axis} has size {size}", file=path)
    return tensor.name, tuple(sizes[1:] if native else sizes), native


def _consumer_counts(model: onnx.ModelProto) -> set[str]:
    used = {name for node in model.graph.node for name in node.input}
    return used | {o.name for o in model.graph.output}


# ----- operators -----------------------------------------------------------------------------
def _spec(node: onnx.NodeProto, constants: dict[str, np.ndarray], opset: int, path: Path,
          used: set[str], output_name: str) -> NodeSpec:
    return NodeSpec(
        name=node.output[0],
        node=_label(node),
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
                file=spec.file, node=spec.node)
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
        raise ModelError(f"{spec.op_type} on constants failed: {error}", file=path, node=spec.node) from None


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
                             file=network.path, node=layer.node or layer.name) from None
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
        together = network.run(batch, np.float64, keep="output")[network.output_name]   # batchable: at once
    except (ValueError, IndexError, TypeError):
        return False
    network.batchable = False
    alone = network.run(batch, np.float64, keep="output")[network.output_name]
    network.batchable = True
    return together.shape == alone.shape and bool(np.allclose(together, alone, rtol=1e-9, atol=1e-9))
