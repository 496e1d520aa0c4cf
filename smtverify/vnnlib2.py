"""VNN-LIB 2.0, read through the official parser (the `vnnlib` package) into the same Property as 1.0.

The official parser checks the grammar, the version, the declarations, the indices and the types.
Its typed tree is then rewritten, node for node, into the S-expressions of the strict 1.0 reader
(vnnlib.Reader), whose checks, DNF and grouping into cases both versions share: a property means
the same whichever version it is written in, and numbers are read exactly from their lexemes.

Handled: one network with one input and one output tensor of element type `real` (the spec's
real-valued queries, which is what 1.0 files mean), any shape, flattened row-major as ONNX lays
tensors out, so `X[i,j]` is input i * columns + j; messages name inputs X_k and outputs Y_k by
that flat position. Comparisons <=, >=, <, >, == and != (as < or >); `and`, `or`; +, -, * with
at most one variable factor. Refused with a `VnnlibError` naming the file: several networks,
hidden nodes, several inputs or outputs, floating-point element types (the spec gives them
IEEE semantics, which this verifier's real arithmetic does not model), and everything the 1.0
reader refuses (non-linear terms, input regions that are not a box, ...).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

from .errors import VnnlibError
from .sexpr import MAX_NESTING, Form
from .vnnlib import Atom, Dnf, Property, Reader

INSTALL_HINT = 'pip install "smtverify[vnnlib2]"'
_COMPARISONS = {"LessEqual": "<=", "GreaterEqual": ">=", "LessThan": "<", "GreaterThan": ">", "Equal": "="}
_CONNECTIVES = {"And": "and", "Or": "or"}
_COMMENT = re.compile(r";[^\n]*")
_PARENTHESIS = re.compile(r"[()]")


def read_vnnlib2(path: Path, text: str, n_inputs: int | None, n_outputs: int | None) -> Property:
    """The Property of a VNN-LIB 2.0 file's text; n_inputs / n_outputs are checked when given."""
    query = _parse(path, text)
    reader = Reader(path)
    network = _single_network(query, reader)
    inputs = _declare(reader, "X", _single_tensor(network.inputs, "input", reader))
    outputs = _declare(reader, "Y", _single_tensor(network.outputs, "output", reader))
    translator = _Translator(reader, {"Input": inputs, "Output": outputs})
    common: list[Atom] = []
    disjuncts: Dnf = [[]]
    for assertion in query.assertions:
        formula, line = translator.formula(assertion.expr)
        disjuncts = reader.assertion(formula, line, common, disjuncts)
    return reader.property(common, disjuncts, n_inputs, n_outputs)


def _parse(path: Path, text: str) -> Any:
    """The official parser's typed tree; its errors become one VnnlibError naming the file."""
    try:
        import vnnlib
    except ImportError:
        raise VnnlibError(f"this is a VNN-LIB 2.0 file, which needs the official parser: {INSTALL_HINT}",
                          file=path) from None
    _check_nesting(path, text)
    try:
        return vnnlib.parse_query_string(text)
    except vnnlib.VNNLibException as error:
        what, line = _parser_message(str(error))
        raise VnnlibError(f"the VNN-LIB 2.0 parser refuses the file: {what}", file=path, line=line) from None


def _check_nesting(path: Path, text: str) -> None:
    """Refuses forms nested deeper than the 1.0 reader allows, before the official parser sees
    them: it crashes the interpreter (a C++ stack overflow) at about 100,000 levels, and the
    translation below recurses once per level."""
    code, depth = _COMMENT.sub("", text), 0
    for parenthesis in _PARENTHESIS.finditer(code):
        depth += 1 if parenthesis.group() == "(" else -1
        if depth > MAX_NESTING:
            line = code.count("\n", 0, parenthesis.start()) + 1
            raise VnnlibError(f"forms nested more than {MAX_NESTING} deep are not supported",
                              file=path, line=line)


def _parser_message(message: str) -> tuple[str, int | None]:
    """(the first error, its line) from the parser's message: a JSON report of the type checker's
    errors, or a plain sentence for a syntax error."""
    try:
        errors = json.loads(message)["errors"]
        first = errors[0]
    except (ValueError, KeyError, IndexError, TypeError):
        return message.strip(), None
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{first.get('message', 'error')}: {first.get('hint', '')}{more}", first.get("line")


def _single_network(query: Any, reader: Reader) -> Any:
    networks = query.networks
    if len(networks) != 1:
        reader.fail(f"the file declares {len(networks)} networks ({', '.join(n.name for n in networks)}); "
                    "only single-network queries are supported")
    if networks[0].hidden:
        reader.fail(f"network '{networks[0].name}' declares hidden nodes "
                    f"({', '.join(h.name for h in networks[0].hidden)}), which are not supported")
    return networks[0]


def _single_tensor(definitions: Sequence[Any], kind: str, reader: Reader) -> Any:
    """The one input (or output) tensor, of element type `real`."""
    if len(definitions) != 1:
        reader.fail(f"the network declares {len(definitions)} {kind} tensors "
                    f"({', '.join(d.name for d in definitions)}); only one {kind} is supported")
    definition = definitions[0]
    if definition.dtype.name != "Real":
        written = str(definition).split()[2]
        reader.fail(f"{kind} '{definition.name}' has element type '{written}': only 'real' is "
                    "supported (floating-point types have IEEE semantics in VNN-LIB 2.0, which "
                    "smtverify's real arithmetic does not model)")
    return definition


def _declare(reader: Reader, kind: str, definition: Any) -> list[int]:
    """Declares the tensor's elements as kind_0 .. kind_{n-1} (no line: the parser gives none) and
    returns its shape."""
    shape = list(definition.shape)
    for k in range(math.prod(shape)):
        reader.declared[f"{kind}_{k}"] = None
    return shape


class _Translator:
    """Rewrites the parser's tree as the 1.0 reader's S-expressions, each Form on the line of its
    first variable or number (the tree keeps lines only there)."""

    def __init__(self, reader: Reader, shapes: dict[str, list[int]]) -> None:
        self.reader = reader
        self.shapes = shapes

    def formula(self, node: Any) -> tuple[Form, int | None]:
        kind = type(node).__name__
        if kind in _CONNECTIVES:
            return self.form(_CONNECTIVES[kind], [self.formula(arg) for arg in node.args])
        if kind == "NotEqual":    # a != b holds exactly where a < b or a > b
            sides = [self.term(node.lhs), self.term(node.rhs)]
            return self.form("or", [self.form("<", sides), self.form(">", sides)])
        if kind in _COMPARISONS:
            return self.form(_COMPARISONS[kind], [self.term(node.lhs), self.term(node.rhs)])
        self.reader.fail(f"unsupported formula '{node}'")

    def term(self, node: Any) -> tuple[str | Form, int | None]:
        kind = type(node).__name__
        if kind == "Var":
            return self.variable(node), node.line
        if kind in ("Float", "Int", "Literal"):
            return node.lexeme, node.line
        if kind == "Negate":
            return self.form("-", [self.term(node.expr)])
        if kind in ("Plus", "Multiply"):
            return self.form("+" if kind == "Plus" else "*", [self.term(arg) for arg in node.args])
        if kind == "Minus":
            return self.form("-", [self.term(node.head)] + [self.term(arg) for arg in node.rest])
        self.reader.fail(f"unsupported term '{node}'")

    def variable(self, node: Any) -> str:
        """The element's 1.0 name: X_k or Y_k, k its row-major position in the tensor (hidden
        nodes, the only other kind, are refused before)."""
        kind = node.kind.name
        position = 0
        for index, size in zip(node.indices, self.shapes[kind]):
            position = position * size + index
        return f"{'X' if kind == 'Input' else 'Y'}_{position}"

    @staticmethod
    def form(head: str, parts: list[tuple[str | Form, int | None]]) -> tuple[Form, int | None]:
        form = Form([head] + [part for part, _ in parts])
        form.line = next((line for _, line in parts if line is not None), None)
        return form, form.line
