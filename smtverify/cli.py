"""The `smtverify` command line. Results go to stdout, progress and errors to stderr.

Every bad input is reported in one line naming the file, node or field at fault, with exit status 2
(no traceback unless --debug).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, NoReturn

import numpy as np

from . import __version__
from .cli_text import demo_text, info_text, result_details, search_text
from .errors import SmtVerifyError
from .verdict import Verdict

EXIT_ERROR = 2        # bad input: a named error
EXIT_INTERNAL = 3     # a defect of smtverify's own: reported in one line, traceback with --debug
EXIT_INTERRUPTED = 130
EXIT_PIPE_CLOSED = 141


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    parser = _parser()
    args = parser.parse_args(_attached_negative_values(sys.argv[1:] if argv is None else list(argv)))
    args.started = started
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        status = args.run(args)
        sys.stdout.flush()          # a closed pipe shows here, while it can still be handled
        return status
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_PIPE_CLOSED
    except KeyboardInterrupt:
        print("smtverify: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if args.debug:
            raise
        named = isinstance(error, SmtVerifyError)
        print(f"smtverify: {'error: ' + str(error) if named else _internal(error)}", file=sys.stderr)
        return EXIT_ERROR if named else EXIT_INTERNAL


def _time_left(args: argparse.Namespace) -> float:
    """What is left of --timeout: the clock starts when the command does, so reading the model and
    the input count too, and the command as a whole ends close to its timeout."""
    return max(0.0, args.timeout - (time.perf_counter() - args.started))


def _internal(error: BaseException) -> str:
    return (f"internal error: {type(error).__name__}: {error} (a defect of smtverify; "
            "--debug shows the traceback)")


def _discard_stdout() -> None:
    """After the reader of stdout went away (`smtverify ... | head -1`): whatever is still buffered
    goes to /dev/null, so the interpreter's own flush at exit does not complain."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


_NEGATIVE_VALUE = re.compile(r"-(\d|\.\d|inf|nan)", re.IGNORECASE)


def _attached_negative_values(argv: list[str]) -> list[str]:
    """`--domain -1,1` as `--domain=-1,1`: argparse takes a value that starts with '-' for an
    option unless it is a plain negative number, so ranges and negative numbers written after a
    space would be rejected with a confusing message instead of reaching their own check."""
    attached: list[str] = []
    for token in argv:
        if attached and attached[-1].startswith("--") and "=" not in attached[-1] and _NEGATIVE_VALUE.match(token):
            attached[-1] = f"{attached[-1]}={token}"
        else:
            attached.append(token)
    return attached


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, as every other error of the command line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (--help shows the usage)\n")


def _number(least: str) -> Callable[[str], float]:
    """An argparse type: a finite float above 0 (least='positive') or at least 0 ('non-negative')."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        if not math.isfinite(value) or value < 0 or (least == "positive" and value == 0):
            raise argparse.ArgumentTypeError(f"must be a {least} finite number, not {text}")
        return value
    parse.__name__ = f"{least} number"
    return parse


POSITIVE, NON_NEGATIVE = _number("positive"), _number("non-negative")


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    common.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser = _Parser(prog="smtverify", description="Safety verification of neural-network "
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
    vnnlib.add_argument("--timeout", type=POSITIVE, default=60.0, help="seconds (default 60)")
    vnnlib.add_argument("--out", help="write a result file in the competition's format")
    bench = command("bench", _bench, "run every instance of an instances.csv and compare with expected verdicts")
    bench.add_argument("instances", help="instances.csv (onnx,vnnlib,timeout_s[,expected]; paths relative to it)")
    bench.add_argument("--timeout-scale", type=POSITIVE, default=1.0, help="multiply every timeout (default 1)")
    bench.add_argument("--out", help="results csv, written as each instance finishes")
    certify = command("certify", _certify, "L-infinity robustness of one classification decision")
    certify.add_argument("model", help="ONNX file")
    certify.add_argument("--input", required=True, help=".npy or image holding one input")
    certify.add_argument("--label", type=int, required=True, help="the class the decision should keep")
    certify.add_argument("--eps", type=NON_NEGATIVE, required=True, help="radius of the L-infinity ball")
    certify.add_argument("--domain", default="0,1", help="valid input range LO,HI (default 0,1)")
    certify.add_argument("--timeout", type=POSITIVE, default=60.0, help="seconds (default 60)")
    certify.add_argument("--out", help="save a counterexample (npy) here")
    encode = command("encode", _encode, "write a VNN-LIB query as self-contained SMT-LIB2 (sat = counterexample)")
    encode.add_argument("model", help="ONNX file")
    encode.add_argument("property", help="VNN-LIB file")
    encode.add_argument("-o", "--output", required=True, help="the .smt2 file to write")
    encode.add_argument("--lp-seconds", type=NON_NEGATIVE, default=30.0,
                        help="time for tightening neuron bounds by LP before encoding (0: none)")
    search = command("search", _search, "DLV search for adversarial examples on a grid of manipulations "
                     "(SAFE_ON_GRID / UNSAFE / UNKNOWN)")
    search.add_argument("model", help="ONNX file")
    search.add_argument("--input", required=True, help=".npy (optionally with a batch axis of 1) or image")
    search.add_argument("--label", type=int, required=True, help="the class the decision should keep")
    chosen = search.add_mutually_exclusive_group()
    chosen.add_argument("--pixels", help="features to move: flat C-order indices i,j,... into the input")
    chosen.add_argument("--features", type=int, help="features chosen by --heuristic, per round (default 4)")
    search.add_argument("--heuristic", choices=("activation", "gradient"), default="activation",
                        help="activation: DLV's |activation - layer mean|; gradient: saliency (default activation)")
    search.add_argument("--span", type=float, required=True, help="one manipulation step")
    search.add_argument("--steps", type=int, required=True, help="M: each feature moves by c*span, c in -M..M")
    search.add_argument("--family", choices=("pixel", "brightness", "contrast"), default="pixel")
    search.add_argument("--rounds", type=int, default=1, help="DLV rounds: add --features features per round")
    search.add_argument("--paths", type=int, default=1, help="points kept per round (1 single-path, more multi-path)")
    search.add_argument("--layer", help="search at this hidden layer (an ONNX node output, see `smtverify info`): the "
                        "input grid's region is propagated to it and its misclassified grid points back-mapped by Z3")
    search.add_argument("--hidden-features", type=int, default=3, help="--layer: hidden dimensions in its grid "
                        "(DLV's activation heuristic; default 3)")
    search.add_argument("--candidates", type=int, default=16, help="--layer: at most this many misclassified hidden "
                        "points back-mapped to inputs (default 16)")
    search.add_argument("--all", action="store_true", help="collect every example, not only the first")
    search.add_argument("--max-files", type=int, default=1000, help="write (and report) at most this many examples; "
                        "later ones are only counted, as examples_not_written (default 1000)")
    search.add_argument("--minimal", metavar="S1,S2,...", help="minimal manipulation: search the grid of the chosen "
                        "pixels at each of these spans and report the smallest span, and the fewest changed "
                        "pixels, for which it holds an adversarial example (pixel family, one grid a span)")
    search.add_argument("--prove-cells", action="store_true",
                        help="when every grid is safe, prove the continuous region each grid spans with the verifier "
                             "(its hull, else the cells between adjacent grid values): SAFE if all are proven")
    search.add_argument("--lift-timeout", type=float, default=30.0, help="seconds for --prove-cells (default 30)")
    search.add_argument("--lift-cells", type=int, default=64, help="--prove-cells: at most this many cells a grid "
                        "(adjacent cells merged beyond it; default 64)")
    search.add_argument("--budget-points", type=int, help="stop after this many grid points (UNKNOWN)")
    search.add_argument("--timeout", type=POSITIVE, default=60.0, help="seconds (default 60)")
    search.add_argument("--domain", default="0,1", help="valid input range LO,HI (default 0,1)")
    search.add_argument("--out", default="smtverify-search", help="folder for the examples (default ./smtverify-search)")
    demo = command("demo", _demo, "the main job on the bundled MNIST CNN: find an adversarial example, prove a "
                   "smaller region safe on the grid, certify an L-infinity ball")
    demo.add_argument("--out", default="smtverify-demo", help="folder for the files (default ./smtverify-demo)")
    return parser


def _emit(args: argparse.Namespace, record: dict[str, Any], text: str) -> None:
    print(json.dumps(record) if args.json else text)


# ----- info ------------------------------------------------------------------------------------
def _info(args: argparse.Namespace) -> int:
    from .onnx_import import load_onnx

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
    _emit(args, record, info_text(record))
    if not network.supported:     # the table above lists them all; the first is the error
        raise network.problems[0]
    return 0


# ----- eval ------------------------------------------------------------------------------------
def _eval(args: argparse.Namespace) -> int:
    from .inputs import read_input
    from .onnx_import import load_onnx

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

    _check_writable(args.out, "--out")
    result, failure = decide(Instance(Path(args.model), Path(args.property), args.timeout, None), _time_left(args))
    if result is None:
        if args.out:
            confirm.write_vnncomp_result(args.out, "error")
        print("error", flush=True)
        _report_failure(failure, args.debug)
        return EXIT_INTERNAL if failure.internal else EXIT_ERROR
    word = result.verdict.vnncomp
    if args.out:      # first, so that a reader who stops after the first line loses nothing
        confirm.write_vnncomp_result(args.out, word, result.counterexample)
    print(word, flush=True)
    if args.json:
        print(json.dumps(result.summary()))
    else:
        print(result_details(result))
    return 0


def _report_failure(failure, debug: bool) -> None:
    """One line on stderr; an internal error's traceback before it with --debug."""
    if not failure.internal:
        print(f"smtverify: error: {failure.message}", file=sys.stderr)
        return
    if debug:
        print(failure.traceback, end="", file=sys.stderr)
    print(f"smtverify: {failure.message}" + ("" if debug else " (a defect of smtverify; --debug shows the traceback)"),
          file=sys.stderr)


def _check_writable(path: str | None, field: str) -> None:
    """Before any work: the folder of an output file exists, so hours of work are not lost at the end."""
    if path and not Path(path).resolve().parent.is_dir():
        raise SmtVerifyError(f"the folder {Path(path).parent} does not exist", file=path, field=field)


def _bench(args: argparse.Namespace) -> int:
    from .bench import read_instances, run

    _check_writable(args.out, "--out")
    instances = read_instances(args.instances)

    def report(outcome, index: int) -> None:
        flag = "   <-- WRONG ANSWER" if outcome.wrong else ""
        print(f"[{index + 1}/{len(instances)}] {outcome.instance.onnx.name} {outcome.instance.vnnlib.name}: "
              f"{outcome.verdict} (expected {outcome.instance.expected or '?'}) {outcome.seconds:.2f}s{flag}",
              file=sys.stderr)
        if outcome.failure is not None:
            _report_failure(outcome.failure, args.debug)

    outcomes = list(run(instances, args.timeout_scale, args.out, report=report))
    wrong = [o for o in outcomes if o.wrong]
    total = sum(o.seconds for o in outcomes)
    words = Counter(o.verdict for o in outcomes)
    record = {"instances": len(outcomes), "solved": words["sat"] + words["unsat"], "wrong": len(wrong),
              "total_seconds": round(total, 3), "sat": words["sat"], "unsat": words["unsat"],
              "timeout": words["timeout"], "unknown": words["unknown"], "error": words["error"]}
    text = (f"solved {record['solved']}/{len(outcomes)} (sat {record['sat']}, unsat {record['unsat']}), "
            f"timeout {record['timeout']}, unknown {record['unknown']}, error {record['error']}, "
            f"wrong {len(wrong)}, total {total:.1f} s")
    for o in wrong:
        text += f"\n!!! WRONG ANSWER: {o.instance.onnx} {o.instance.vnnlib}: said {o.verdict}, expected {o.instance.expected}"
    _emit(args, record, text)
    return 1 if wrong else 0


def _certify(args: argparse.Namespace) -> int:
    from .inputs import read_input
    from .onnx_import import load_onnx
    from .verify import Settings, Verifier, robustness_property

    low, high = _domain(args.domain)
    _check_writable(args.out, "--out")
    network = load_onnx(args.model)
    x = read_input(args.input, network)
    _check_within_domain(x, (low, high), args.input)
    prop = robustness_property(network, x, args.label, args.eps, low, high)
    result = Verifier(network, Settings(timeout=_time_left(args))).verify(prop)
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


def _search(args: argparse.Namespace) -> int:
    from .export import ExampleWriter
    from .inputs import read_input
    from .hidden_search import HiddenSettings
    from .onnx_import import load_onnx
    from .search import SearchSettings, dlv_search

    network = load_onnx(args.model)
    x = read_input(args.input, network)
    if not 0 <= args.label < network.n_outputs:
        raise SmtVerifyError(f"label {args.label} is not a class of a network with {network.n_outputs} outputs",
                             field="--label")
    dims = _pixels(args.pixels, network.n_inputs) if args.pixels else None
    if args.family != "pixel" and (dims is not None or args.features is not None):
        raise SmtVerifyError(f"the {args.family} family moves the whole input: it takes no --pixels or --features",
                             field="--family")
    for name, value in (("--span", args.span), ("--steps", args.steps), ("--features", args.features),
                        ("--rounds", args.rounds), ("--paths", args.paths), ("--budget-points", args.budget_points),
                        ("--lift-timeout", args.lift_timeout), ("--lift-cells", args.lift_cells),
                        ("--hidden-features", args.hidden_features), ("--candidates", args.candidates),
                        ("--max-files", args.max_files)):
        if value is not None and not value > 0:
            raise SmtVerifyError(f"{name} must be positive, not {value}", field=name)
    domain = _domain(args.domain)
    if np.any(x < domain[0]) or np.any(x > domain[1]):
        raise SmtVerifyError(f"the input lies outside the domain {list(domain)}", file=args.input, field="--domain")
    settings = SearchSettings(family=args.family, span=args.span, steps=args.steps, features=args.features or min(4, network.n_inputs),
                              heuristic=args.heuristic, rounds=args.rounds, paths=args.paths, collect_all=args.all,
                              max_examples=args.max_files, max_points=args.budget_points, timeout=_time_left(args),
                              domain=domain,
                              lift=args.prove_cells, lift_timeout=args.lift_timeout, lift_cells=args.lift_cells,
                              layer=args.layer, hidden=args.layer and HiddenSettings(
                                  args.layer, args.hidden_features, args.steps, args.candidates))
    if args.minimal:
        return _minimal(args, network, x, settings, dims)
    with ExampleWriter(args.out, x, domain, args.max_files) as writer:
        report = dlv_search(network, x, args.label, settings, dims, on_found=writer.write)
    record = {"model": network.path, "input": args.input, **report.summary(), **writer.summary(),
              "examples_not_written": report.examples_found - writer.written, "out": args.out}
    _emit(args, record, search_text(record))
    return 0


def _minimal(args: argparse.Namespace, network, x: np.ndarray, settings, dims: list[int] | None) -> int:
    from .export import ExampleWriter
    from .features import select_features
    from .search import minimal_search

    if args.family != "pixel" or args.layer:
        raise SmtVerifyError("--minimal searches input pixels only (no --family or --layer)", field="--minimal")
    try:
        spans = [float(v) for v in args.minimal.split(",")]
    except ValueError:
        raise SmtVerifyError(f"--minimal must be spans S1,S2,..., not '{args.minimal}'", field="--minimal") from None
    if not all(v > 0 for v in spans):
        raise SmtVerifyError("--minimal spans must be positive", field="--minimal")
    if dims is None:
        dims = [int(d) for d in select_features(network, x, settings.features, settings.heuristic, args.label)]
    with ExampleWriter(args.out, x, settings.domain, args.max_files) as writer:
        report = minimal_search(network, x, dims, spans, args.steps, args.label, settings, on_found=writer.write)
    record = {"model": network.path, "input": args.input, **report.summary(), "out": args.out}
    text = [f"minimal manipulation of pixels {report.dims} (steps {report.steps}): smallest span with an "
            f"adversarial example {report.min_span}, fewest changed pixels {report.min_pixels} "
            f"(at span {report.min_pixels_span}); {report.search.points_evaluated:,} points in "
            f"{report.search.seconds:.2f} s"]
    text += [f"  span {r['span']}: {r['verdict']}, fewest changed pixels {r['min_pixels']}" for r in report.per_span]
    _emit(args, record, "\n".join(text))
    return 0


def _pixels(text: str, n_inputs: int) -> list[int]:
    try:
        dims = [int(v) for v in text.split(",")]
    except ValueError:
        raise SmtVerifyError(f"--pixels must be integers i,j,..., not '{text}'", field="--pixels") from None
    bad = [d for d in dims if not 0 <= d < n_inputs]
    if bad:
        raise SmtVerifyError(f"pixel index {bad[0]} is outside 0..{n_inputs - 1} (flat C-order indices)",
                             field="--pixels")
    if len(set(dims)) != len(dims):
        raise SmtVerifyError("--pixels lists an index twice", field="--pixels")
    return dims


def _domain(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise SmtVerifyError(f"--domain must be LO,HI, not '{text}'", field="--domain") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise SmtVerifyError(f"--domain {text}: LO and HI must be finite numbers", field="--domain")
    if not low < high:
        raise SmtVerifyError(f"--domain {text}: LO must be below HI", field="--domain")
    return low, high


def _check_within_domain(x: np.ndarray, domain: tuple[float, float], input_path: str) -> None:
    outside = np.flatnonzero((x.reshape(-1) < domain[0]) | (x.reshape(-1) > domain[1]))
    if outside.size:
        raise SmtVerifyError(f"the input lies outside the domain {list(domain)}: value {x.reshape(-1)[outside[0]]:.6g} "
                             f"at flat index {outside[0]} ({outside.size} values outside)", file=input_path,
                             field="--domain")


def _encode(args: argparse.Namespace) -> int:
    from .smtlib import write_smtlib2

    _check_writable(args.output, "--output")
    write_smtlib2(args.model, args.property, args.output, args.lp_seconds)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


# ----- demo ------------------------------------------------------------------------------------
def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    summary = run_demo(args.out)
    _emit(args, summary, demo_text(summary))
    agree = all(r["same_class"] == r["images"] for r in summary["models"])
    proved = summary["prove"]["verdict"] in ("SAFE", "SAFE_ON_GRID")
    return 0 if agree and summary["find"]["verdict"] == "UNSAFE" and proved else 1


if __name__ == "__main__":
    sys.exit(main())
