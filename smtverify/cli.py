"""The `smtverify` command line. Results go to stdout, progress and errors to stderr.

Every bad input is reported in one line naming the file, node or field at fault, with exit status 2
(no traceback unless --debug).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from typing import Any, Callable

import numpy as np

from . import __version__, resources
from .errors import SmtVerifyError
from .inputs import read_input
from .network import Network
from .onnx_import import load_onnx
from .reference import OnnxRuntimeExecutor

EXIT_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        return args.run(args)
    except SmtVerifyError as error:
        if args.debug:
            raise
        print(f"smtverify: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("smtverify: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    common.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser = argparse.ArgumentParser(prog="smtverify", description="Safety verification of neural-network "
                                     "classification decisions (DLV method, Z3).")
    parser.add_argument("--version", action="version", version=f"smtverify {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, run: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(run=run)
        return p

    info = command("info", _info, "list a model's layers and whether every operator is supported")
    info.add_argument("model", help="ONNX file")
    evaluate = command("eval", _eval, "run a model on one input and print its output and class")
    evaluate.add_argument("model", help="ONNX file")
    evaluate.add_argument("input", help=".npy array or image file holding one input")
    evaluate.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    command("demo", _demo, "classify the bundled test images with the bundled models (no arguments)")
    return parser


def _emit(args: argparse.Namespace, record: dict[str, Any], text: str) -> None:
    print(json.dumps(record) if args.json else text)


# ----- info ------------------------------------------------------------------------------------
def _info(args: argparse.Namespace) -> int:
    network = load_onnx(args.model, strict=False)
    layers = [{"name": layer.name, "op_type": layer.op_type, "shape": network.onnx_shape(layer.shape),
               "supported": layer.operator is not None} for layer in network.order]
    counts = Counter(layer.op_type for layer in network.order)
    record = {
        "model": network.path, "opset": network.opset,
        "input": {"name": network.input_name, "shape": network.onnx_shape(network.input_shape)},
        "output": {"name": network.output_name, "shape": network.onnx_shape(network.layers[network.output_name].shape)},
        "layers": layers, "operator_counts": dict(sorted(counts.items())),
        "fully_supported": network.supported, "problems": [str(p) for p in network.problems],
    }
    _emit(args, record, _info_text(record))
    return 0 if network.supported else 1


def _info_text(record: dict[str, Any]) -> str:
    def shape(s: list) -> str:
        return "[" + ",".join(str(d) for d in s) + "]"
    rows = [(str(i), l["name"], l["op_type"], shape(l["shape"]), "" if l["supported"] else "UNSUPPORTED")
            for i, l in enumerate(record["layers"], start=1)]
    widths = [max(len(r[c]) for r in rows + [("#", "layer", "operator", "output shape", "")]) for c in range(4)]
    lines = [f"model:  {record['model']} (opset {record['opset']})",
             f"input:  {record['input']['name']} {shape(record['input']['shape'])}",
             f"output: {record['output']['name']} {shape(record['output']['shape'])}", ""]
    for row in [("#", "layer", "operator", "output shape", "")] + rows:
        lines.append(("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4]).rstrip())
    lines.append("")
    lines.append("operators: " + ", ".join(f"{op} x{n}" for op, n in record["operator_counts"].items()))
    if record["fully_supported"]:
        lines.append(f"supported: yes, every operator ({len(rows)} layers)")
    else:
        lines.append("supported: NO")
        lines.extend(f"  {p}" for p in record["problems"])
    return "\n".join(lines)


# ----- eval ------------------------------------------------------------------------------------
def _eval(args: argparse.Namespace) -> int:
    network = load_onnx(args.model)
    x = read_input(args.input, network)
    output = network.logits(x, np.float64 if args.dtype == "float64" else np.float32)[0]
    label = int(np.argmax(output))
    record = {"model": network.path, "input": args.input, "dtype": args.dtype,
              "output": [float(v) for v in output], "class": label}
    text = f"output: {np.array2string(output, precision=6, max_line_width=100)}\nclass:  {label}"
    _emit(args, record, text)
    return 0


# ----- demo ------------------------------------------------------------------------------------
def _demo(args: argparse.Namespace) -> int:
    rows = []
    for name in resources.MODELS:
        rows.append(_classify_bundled(name))
        print(f"  {name}: done", file=sys.stderr)
    lines = ["Bundled models on their bundled test images (numpy executor, float32; "
             "cross-checked with onnxruntime)", "",
             f"{'model':<12} {'images':>6} {'accuracy':>9} {'agree':>6} {'max |diff|':>11} {'seconds':>8}"]
    for r in rows:
        lines.append(f"{r['model']:<12} {r['images']:>6} {r['accuracy']:>9.4f} {r['same_class']:>6} "
                     f"{r['max_abs_diff']:>11.2e} {r['seconds']:>8.3f}")
    _emit(args, {"models": rows}, "\n".join(lines))
    return 0 if all(r["same_class"] == r["images"] for r in rows) else 1


def _classify_bundled(name: str) -> dict[str, Any]:
    network: Network = load_onnx(resources.model_path(name))
    data = resources.test_images(name)
    start = time.perf_counter()
    ours = network.logits(data.images)
    seconds = time.perf_counter() - start
    theirs = OnnxRuntimeExecutor(network).logits(data.images)
    return {"model": name, "images": len(data.labels),
            "accuracy": float(np.mean(ours.argmax(1) == data.labels)),
            "same_class": int(np.sum(ours.argmax(1) == theirs.argmax(1))),
            "max_abs_diff": float(np.abs(ours - theirs).max()), "seconds": seconds}


if __name__ == "__main__":
    sys.exit(main())
