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
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import __version__, resources
from .errors import SmtVerifyError
from .inputs import read_input
from .network import Network
from .onnx_import import load_onnx
from .reference import OnnxRuntimeExecutor
from .verdict import Verdict

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
    vnnlib = command("vnnlib", _vnnlib, "decide a VNN-LIB property (first stdout line: sat, unsat, "
                     "unknown, timeout or error)")
    vnnlib.add_argument("model", help="ONNX file")
    vnnlib.add_argument("property", help="VNN-LIB file")
    vnnlib.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    vnnlib.add_argument("--out", help="write a result file in the competition's format")
    bench = command("bench", _bench, "run every instance of an instances.csv and compare with expected verdicts")
    bench.add_argument("instances", help="instances.csv (onnx,vnnlib,timeout_s[,expected]; paths relative to it)")
    bench.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every timeout (default 1)")
    bench.add_argument("--out", help="results csv, written as each instance finishes")
    certify = command("certify", _certify, "L-infinity robustness of one classification decision")
    certify.add_argument("model", help="ONNX file")
    certify.add_argument("--input", required=True, help=".npy or image holding one input")
    certify.add_argument("--label", type=int, required=True, help="the class the decision should keep")
    certify.add_argument("--eps", type=float, required=True, help="radius of the L-infinity ball")
    certify.add_argument("--domain", default="0,1", help="valid input range LO,HI (default 0,1)")
    certify.add_argument("--timeout", type=float, default=60.0)
    certify.add_argument("--out", help="save a counterexample (npy) here")
    encode = command("encode", _encode, "write a VNN-LIB query as self-contained SMT-LIB2 (sat = counterexample)")
    encode.add_argument("model", help="ONNX file")
    encode.add_argument("property", help="VNN-LIB file")
    encode.add_argument("-o", "--output", required=True, help="the .smt2 file to write")
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


# ----- vnnlib, bench, certify, encode --------------------------------------------------------
def _vnnlib(args: argparse.Namespace) -> int:
    from . import confirm
    from .bench import Instance, decide

    result, error = decide(Instance(Path(args.model), Path(args.property), args.timeout, None), args.timeout)
    if result is None:
        print("error")
        print(f"smtverify: error: {error}", file=sys.stderr)
        if args.out:
            confirm.write_vnncomp_result(args.out, "error")
        return EXIT_ERROR
    word = result.verdict.vnncomp
    print(word)
    if args.json:
        print(json.dumps(result.summary()))
    else:
        _print_result_details(result)
    if args.out:
        confirm.write_vnncomp_result(args.out, word, result.counterexample)
    return 0


def _print_result_details(result) -> None:
    print(f"verdict: {result.verdict.value} in {result.seconds:.3f} s ({result.guarantee})")
    if result.min_margin is not None:
        print(f"smallest proven margin: {result.min_margin:.6g}")
    if result.counterexample is not None:
        cex = result.counterexample
        print(f"counterexample (confirmed by {cex.executor}): input {np.array2string(cex.input.reshape(-1), precision=8, threshold=12)}")
        print(f"  output {np.array2string(cex.output.reshape(-1), precision=6)}")
    print("stats: " + ", ".join(f"{k}={v}" for k, v in result.stats.items()))


def _bench(args: argparse.Namespace) -> int:
    from .bench import read_instances, run

    instances = read_instances(args.instances)
    wrong, solved, total = 0, 0, 0.0

    def report(outcome, index: int) -> None:
        flag = "   <-- WRONG ANSWER" if outcome.wrong else ""
        print(f"[{index + 1}/{len(instances)}] {outcome.instance.onnx.name} {outcome.instance.vnnlib.name}: "
              f"{outcome.verdict} (expected {outcome.instance.expected or '?'}) {outcome.seconds:.2f}s{flag}",
              file=sys.stderr)

    outcomes = list(run(instances, args.timeout_scale, args.out, report=report))
    solved = sum(o.solved for o in outcomes)
    wrong = [o for o in outcomes if o.wrong]
    total = sum(o.seconds for o in outcomes)
    record = {"instances": len(outcomes), "solved": solved, "wrong": len(wrong), "total_seconds": round(total, 3),
              "sat": sum(o.verdict == "sat" for o in outcomes), "unsat": sum(o.verdict == "unsat" for o in outcomes)}
    text = (f"solved {solved}/{len(outcomes)} (sat {record['sat']}, unsat {record['unsat']}), "
            f"wrong {len(wrong)}, total {total:.1f} s")
    for o in wrong:
        text += f"\n!!! WRONG ANSWER: {o.instance.onnx} {o.instance.vnnlib}: said {o.verdict}, expected {o.instance.expected}"
    _emit(args, record, text)
    return 1 if wrong else 0


def _certify(args: argparse.Namespace) -> int:
    from .verify import Settings, Verifier, robustness_property

    network = load_onnx(args.model)
    x = read_input(args.input, network)
    low, high = _domain(args.domain)
    prop = robustness_property(network, x, args.label, args.eps, low, high)
    result = Verifier(network, Settings(timeout=args.timeout)).verify(prop)
    verdict = result.verdict.value if result.verdict in (Verdict.SAFE, Verdict.UNSAFE) else "UNKNOWN"
    record = {"model": network.path, "input": args.input, "label": args.label, "eps": args.eps, **result.summary(),
              "verdict": verdict}
    if result.counterexample is not None:
        cex = result.counterexample
        record["counterexample"] = {"new_class": int(np.argmax(cex.output)), "linf": float(np.abs(cex.input.reshape(-1) - x.reshape(-1)).max())}
        if args.out:
            np.save(args.out, cex.input.reshape(network.input_shape))
            record["counterexample"]["file"] = args.out
    lines = [f"{verdict}: class {args.label} within L-inf eps={args.eps} of {args.input} ({result.seconds:.2f} s)"]
    if "counterexample" in record:
        lines.append(f"  counterexample: class {record['counterexample']['new_class']}, "
                     f"L-inf distance {record['counterexample']['linf']:.6g}" +
                     (f", saved to {args.out}" if args.out else ""))
    lines.append(f"  guarantee: {result.guarantee}")
    _emit(args, record, "\n".join(lines))
    return 0


def _domain(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise SmtVerifyError(f"--domain must be LO,HI, not '{text}'", field="--domain") from None
    if not low < high:
        raise SmtVerifyError(f"--domain {text}: LO must be below HI", field="--domain")
    return low, high


def _encode(args: argparse.Namespace) -> int:
    from .encode import write_smtlib2

    write_smtlib2(args.model, args.property, args.output)
    print(f"wrote {args.output}", file=sys.stderr)
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
